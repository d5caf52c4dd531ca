/** HEADs on recordings not cached, joined and capped (src/http/cold-heads.ts), without a network. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import { ColdHeads } from '../../src/http/cold-heads.js';

/** An upstream HEAD the test answers by hand. */
function pendingAsk() {
  const asked: Array<{ signal: AbortSignal; answer: (size: number) => void }> = [];
  const ask = (signal: AbortSignal) =>
    new Promise<number>((resolve, reject) => {
      asked.push({ signal, answer: resolve });
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  return { asked, ask };
}

const live = () => new AbortController().signal;

it('requests for one key share one HEAD; another key asks its own', async () => {
  const heads = new ColdHeads({ max: 4, waitMs: 60_000 });
  const { asked, ask } = pendingAsk();
  const same = [heads.run('a', ask, live()), heads.run('a', ask, live()), heads.run('a', ask, live())];
  const other = heads.run('b', ask, live());
  await new Promise((r) => setImmediate(r));
  assert.equal(asked.length, 2);
  asked[0]!.answer(100);
  asked[1]!.answer(200);
  assert.deepEqual(await Promise.all(same), [100, 100, 100]);
  assert.equal(await other, 200);
  // Once answered, the next request asks again: nothing is remembered.
  const again = heads.run('a', ask, live());
  await new Promise((r) => setImmediate(r));
  assert.equal(asked.length, 3);
  asked[2]!.answer(300);
  assert.equal(await again, 300);
});

it('at most max distinct HEADs ask at once; one beyond waits its turn, then fails BUSY after waitMs', async () => {
  let busy = 0;
  const heads = new ColdHeads({ max: 2, waitMs: 30, onBusy: () => busy++ });
  const { asked, ask } = pendingAsk();
  const first = heads.run('a', ask, live());
  const second = heads.run('b', ask, live());
  const third = heads.run('c', ask, live());
  await new Promise((r) => setImmediate(r));
  assert.equal(asked.length, 2, 'the third waits for a slot');
  assert.deepEqual(heads.stats(), { active: 2, waiting: 1 });
  asked[0]!.answer(1);
  assert.equal(await first, 1);
  // The freed slot goes to the waiter.
  for (let i = 0; i < 100 && asked.length < 3; i++) await new Promise((r) => setImmediate(r));
  assert.equal(asked.length, 3);
  asked[2]!.answer(3);
  assert.equal(await third, 3);
  // Both slots held: the next one is refused after waitMs, with a short Retry-After, and counted.
  const held = heads.run('d', ask, live());
  const refused = heads.run('e', ask, live());
  await assert.rejects(
    refused,
    (err: unknown) =>
      isRecgateError(err) &&
      err.code === 'RECGATE_UPSTREAM_BUSY' &&
      err.statusCode === 503 &&
      err.headers['retry-after'] === '1',
  );
  assert.equal(busy, 1);
  assert.equal(asked.length, 4, 'the refused one never asked');
  asked[1]!.answer(2);
  asked[3]!.answer(4);
  assert.deepEqual(await Promise.all([second, held]), [2, 4]);
  assert.deepEqual(heads.stats(), { active: 0, waiting: 0 });
});

it('the shared HEAD is cancelled only when every request for it has gone', async () => {
  const heads = new ColdHeads({ max: 1, waitMs: 60_000 });
  const { asked, ask } = pendingAsk();
  const [one, two] = [new AbortController(), new AbortController()];
  const a = heads.run('k', ask, one.signal);
  const b = heads.run('k', ask, two.signal);
  await new Promise((r) => setImmediate(r));
  one.abort(new Error('first client left'));
  await assert.rejects(a, /first client left/);
  assert.equal(asked[0]!.signal.aborted, false, 'still wanted by the second');
  two.abort(new Error('second client left'));
  await assert.rejects(b, /second client left/);
  assert.equal(asked[0]!.signal.aborted, true);
  // Its slot is free again, and a new request for the key asks afresh rather than joining the cancelled one.
  const c = heads.run('k', ask, live());
  for (let i = 0; i < 100 && asked.length < 2; i++) await new Promise((r) => setImmediate(r));
  assert.equal(asked.length, 2);
  asked[1]!.answer(7);
  assert.equal(await c, 7);
});

it("passes the HEAD's failure to every request that shared it", async () => {
  const heads = new ColdHeads({ max: 1, waitMs: 0 });
  let calls = 0;
  const failing = async () => {
    calls += 1;
    await new Promise((r) => setImmediate(r));
    throw new Error('upstream said no');
  };
  const results = await Promise.allSettled([
    heads.run('x', failing, live()),
    heads.run('x', failing, live()),
  ]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['rejected', 'rejected'],
  );
  assert.equal(calls, 1);
});
