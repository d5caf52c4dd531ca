/**
 * Upstream admission end to end (gateway + emulator in-process): the per-process cap, the queue's fairness
 * across businesses, its bounds, and requests that leave it.
 */
import assert from 'node:assert/strict';
import { setMaxListeners } from 'node:events';
import { describe, it } from 'node:test';
import { callFiles } from '../helpers/recordings.js';
import { startStack } from '../helpers/stack.js';
import { assertError, type Cold, coldCall, download, metric, until } from './admission-helpers.js';

describe('upstream admission', () => {
  it('never runs more media downloads at once than --upstream-concurrency', async (t) => {
    const stack = await startStack({ config: { upstreamConcurrency: 3, coldDownloadRate: 0 } });
    t.after(() => stack.close());
    stack.emulator.setThrottle({ ttfbMs: 100 });
    const tokens = { a: await stack.token('biz-a'), b: await stack.token('biz-b') };
    const calls: Array<[Cold, string]> = [];
    for (let i = 0; i < 12; i++) {
      calls.push([await coldCall(stack, i % 2 ? 'biz-a' : 'biz-b'), i % 2 ? tokens.a : tokens.b]);
    }
    const answering = Promise.all(calls.map(([call, token]) => download(stack, token, call.callSid)));
    // 12 downloads, 3 at a time: the slots are all in use for several turnovers.
    await until('every slot in use', async () => (await metric(stack, 'recgate_upstream_admitted')) === 3);
    const answers = await answering;
    for (const [i, res] of answers.entries()) {
      assert.equal(res.status, 200);
      assert.equal(res.body.length, calls[i]![0].size);
    }
    const stats = stack.emulator.stats();
    assert.equal(stats.total_media_requests, 12);
    assert.equal(stats.max_concurrent_media_requests, 3);
    assert.ok((await metric(stack, 'recgate_upstream_queue_wait_seconds_count')) >= 12);
    // 9 of the 12 waited for a download of at least 100 ms to end.
    assert.ok(
      (await metric(stack, 'recgate_upstream_queue_wait_seconds_sum')) > 0,
      'queue waits are measured',
    );
    await until(
      'every slot given back',
      async () => (await metric(stack, 'recgate_upstream_admitted')) === 0,
    );
  });

  it("one business's 300 queued cold calls delay another's single click by one slot turnover at most", async (t) => {
    const stack = await startStack({ config: { upstreamConcurrency: 1, coldDownloadRate: 0 } });
    t.after(() => stack.close());
    // Each download holds the one slot for 1.5 s before its first byte, so turnovers are few and far apart.
    stack.emulator.setThrottle({ ttfbMs: 1500 });
    const tokenA = await stack.token('biz-a');
    const backlog: Cold[] = [];
    for (let i = 0; i < 300; i++) backlog.push(await coldCall(stack, 'biz-a', 1000));
    const click = await coldCall(stack, 'biz-b', 1000);
    const leave = new AbortController();
    setMaxListeners(backlog.length + 10, leave.signal);
    const pending = backlog.map((call) =>
      download(stack, tokenA, call.callSid, { signal: leave.signal }).catch((err: unknown) => err),
    );
    await until('a backlog of 250 cold calls of business A', async () => {
      return (await metric(stack, 'recgate_upstream_queue_depth')) >= 250;
    });

    const before = stack.emulator.stats().total_media_requests;
    const clicked = download(stack, await stack.token('biz-b'), click.callSid);
    await until("B's media request", () => stack.emulator.stats().media_requests[click.recordingSid] === 1);
    // B waited for the download in flight when it came (and at most one more, had that one ended while B's
    // own request was still being authenticated), never for A's backlog.
    const started = stack.emulator.stats().total_media_requests - before;
    const waiting = await metric(stack, 'recgate_upstream_queue_depth');
    t.diagnostic(
      `B's click: ${started} media request(s) from the click to its own, ${waiting} of A's waiting`,
    );
    assert.ok(started <= 2, `${started} media requests from B's click to its own`);
    assert.ok(waiting >= 240, "A's backlog is still waiting");

    // Every A client leaves: their flights leave the queue and start nothing.
    leave.abort();
    await Promise.all(pending);
    await until(
      'the queue to empty',
      async () => (await metric(stack, 'recgate_upstream_queue_depth')) === 0,
    );
    const res = await clicked;
    assert.equal(res.status, 200);
    assert.equal(res.body.length, click.size);
    // A queued flight left would have been granted B's slot and asked upstream by now.
    const total = stack.emulator.stats().total_media_requests;
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(stack.emulator.stats().total_media_requests, total, 'the abandoned flights started nothing');
    const abandoned = await metric(stack, 'recgate_upstream_rejections_total{reason="abandoned"}');
    t.diagnostic(`${abandoned} queued downloads abandoned, ${total} media requests in all`);
    assert.ok(abandoned >= 240);
    const asked = new Set(Object.keys(stack.emulator.stats().media_requests));
    for (const call of backlog.filter((c) => !asked.has(c.recordingSid))) {
      assert.deepEqual(await callFiles(`${stack.dataDir}/recordings`, call.callSid), [], 'nothing on disk');
    }
  });

  it('answers 503 RECGATE_UPSTREAM_BUSY with Retry-After when the queue is full, and when the wait runs out', async (t) => {
    const stack = await startStack({
      config: {
        upstreamConcurrency: 1,
        upstreamQueueMax: 1,
        upstreamQueueTimeoutMs: 300,
        coldDownloadRate: 0,
      },
    });
    t.after(() => stack.close());
    stack.emulator.setThrottle({ ttfbMs: 2000 });
    const token = await stack.token('biz-a');
    const [first, second, third] = [
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
    ];
    const inFlight = download(stack, token, first.callSid);
    await until('the first download in flight', () => stack.emulator.stats().total_media_requests === 1);
    const queued = download(stack, token, second.callSid);
    await until('one queued', async () => (await metric(stack, 'recgate_upstream_queue_depth')) === 1);
    const full = await download(stack, token, third.callSid);
    assertError(full, 503, 'RECGATE_UPSTREAM_BUSY');
    assert.match(String(full.headers['retry-after']), /^[1-9]\d*$/);
    const timedOut = await queued;
    assertError(timedOut, 503, 'RECGATE_UPSTREAM_BUSY');
    assert.match(String(timedOut.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal((await inFlight).status, 200);
    assert.equal(stack.emulator.stats().total_media_requests, 1, 'the refused ones never reached upstream');
  });
});
