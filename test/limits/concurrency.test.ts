/** The per-process concurrency cap (src/limits/concurrency.ts). */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ConcurrencyCap, type ReleaseSlot } from '../../src/limits/concurrency.js';

it('gives at most max slots; waiters get freed ones in arrival order; a slot released twice frees one', async () => {
  const cap = new ConcurrencyCap({ max: 2, waitMs: 60_000 });
  const a = (await cap.acquire())!;
  const b = (await cap.acquire())!;
  const order: string[] = [];
  const c = cap.acquire().then((slot) => {
    order.push('c');
    return slot;
  });
  const d = cap.acquire().then((slot) => {
    order.push('d');
    return slot;
  });
  assert.deepEqual(cap.stats(), { active: 2, waiting: 2 });
  a();
  a();
  const first = (await c)!;
  assert.deepEqual(order, ['c']);
  assert.deepEqual(cap.stats(), { active: 2, waiting: 1 });
  b();
  const second = (await d)!;
  assert.deepEqual(order, ['c', 'd']);
  first();
  second();
  assert.deepEqual(cap.stats(), { active: 0, waiting: 0 });
});

it('tells a waiter there was no slot after waitMs, or at once with waitMs 0', async () => {
  const waits = new ConcurrencyCap({ max: 1, waitMs: 20 });
  const held = (await waits.acquire())!;
  assert.equal(await waits.acquire(), undefined);
  assert.deepEqual(waits.stats(), { active: 1, waiting: 0 });
  held();
  const none = new ConcurrencyCap({ max: 1, waitMs: 0 });
  const taken = (await none.acquire())!;
  assert.equal(await none.acquire(), undefined);
  taken();
});

it("a waiter whose signal aborts leaves with the signal's reason and takes no slot", async () => {
  const cap = new ConcurrencyCap({ max: 1, waitMs: 60_000 });
  const held = (await cap.acquire())!;
  const controller = new AbortController();
  const waiting = cap.acquire(controller.signal);
  controller.abort(new Error('client left'));
  await assert.rejects(waiting, /client left/);
  assert.deepEqual(cap.stats(), { active: 1, waiting: 0 });
  await assert.rejects(cap.acquire(controller.signal), /client left/);
  held();
  const next: ReleaseSlot | undefined = await cap.acquire();
  assert.ok(next);
  assert.deepEqual(cap.stats(), { active: 1, waiting: 0 });
});

it('refuses bad options, naming them', () => {
  for (const max of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new ConcurrencyCap({ max, waitMs: 0 }), /options.max must be a positive integer/);
  }
  assert.throws(() => new ConcurrencyCap({ max: 1, waitMs: -1 }), /options.waitMs must be a non-negative/);
});
