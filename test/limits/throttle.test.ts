/**
 * The upstream breaker, HEAD from upstream metadata, and the per-business cold-download rate limit, end to
 * end (gateway + emulator in-process).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { callFiles, settledFiles, storeRecording } from '../helpers/recordings.js';
import { startStack } from '../helpers/stack.js';
import { assertError, coldCall, download, metric, until } from './admission-helpers.js';

/** Every HTTP exchange the gateway had with the upstream, of any kind. */
const upstreamRequests = (stack: Parameters<typeof metric>[0]) =>
  metric(stack, 'recgate_upstream_requests_total');

describe('upstream breaker', () => {
  it('a 429 opens it: cold requests get 503 THROTTLED with the seconds left, cached ones still play, nothing goes upstream', async (t) => {
    const stack = await startStack({
      config: { coldDownloadRate: 0 },
      upstream: { retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 100, maxTotalMs: 5000 } },
    });
    t.after(() => stack.close());
    const token = await stack.token('biz-a');
    const cached = await coldCall(stack, 'biz-a', 20_000);
    assert.equal((await download(stack, token, cached.callSid)).status, 200);
    const [limited, other] = [await coldCall(stack, 'biz-a'), await coldCall(stack, 'biz-a')];

    stack.emulator.addFault({ recording_sid: limited.recordingSid, kind: 'rate_limit', retry_after: 30 });
    const trips = await metric(stack, 'recgate_upstream_breaker_trips_total');
    const first = await download(stack, token, limited.callSid);
    assertError(first, 503, 'RECGATE_UPSTREAM_THROTTLED');
    assert.ok(Number(first.headers['retry-after']) >= 29 && Number(first.headers['retry-after']) <= 30);
    assert.equal(
      stack.emulator.stats().media_requests[limited.recordingSid],
      1,
      'no retry sooner than asked',
    );
    assert.equal(await metric(stack, 'recgate_upstream_breaker_open'), 1);
    assert.equal(await metric(stack, 'recgate_upstream_breaker_trips_total'), trips + 1);

    const before = { upstream: await upstreamRequests(stack), emulator: stack.emulator.stats() };
    const cold = await download(stack, token, other.callSid);
    assertError(cold, 503, 'RECGATE_UPSTREAM_THROTTLED');
    assert.match(String(cold.headers['retry-after']), /^(29|30)$/);
    const head = await download(stack, token, other.callSid, { method: 'HEAD' });
    assert.equal(head.status, 503);
    assert.match(String(head.headers['retry-after']), /^(29|30)$/);
    const whole = await download(stack, token, cached.callSid);
    assert.equal(whole.status, 200);
    assert.equal(whole.body.length, cached.size);
    const part = await download(stack, token, cached.callSid, { headers: { range: 'bytes=100-199' } });
    assert.equal(part.status, 206);
    assert.equal(part.body.length, 100);
    assert.equal((await download(stack, token, cached.callSid, { method: 'HEAD' })).status, 200);

    assert.equal(await upstreamRequests(stack), before.upstream, 'no upstream request while it is open');
    const after = stack.emulator.stats();
    assert.equal(after.total_media_requests, before.emulator.total_media_requests);
    assert.equal(after.total_head_requests, before.emulator.total_head_requests);
    assert.ok((await metric(stack, 'recgate_upstream_rejections_total{reason="throttled"}')) >= 1);
  });

  it('a short Retry-After is waited in full, then the download goes on', async (t) => {
    const stack = await startStack({
      config: { coldDownloadRate: 0 },
      upstream: { retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2000, maxTotalMs: 5000 } },
    });
    t.after(() => stack.close());
    const token = await stack.token('biz-a');
    const call = await coldCall(stack, 'biz-a');
    stack.emulator.addFault({ recording_sid: call.recordingSid, kind: 'rate_limit', retry_after: 1 });
    // The metrics registry is the process's: other tests' breakers count in it too.
    const trips = await metric(stack, 'recgate_upstream_breaker_trips_total');
    const started = Date.now();
    const res = await download(stack, token, call.callSid);
    assert.equal(res.status, 200);
    assert.ok(Date.now() - started >= 950, 'the retry waited the whole Retry-After');
    assert.equal(stack.emulator.stats().media_requests[call.recordingSid], 2);
    // The breaker opened for the 1 s window and closes by itself once it has passed.
    assert.equal(await metric(stack, 'recgate_upstream_breaker_trips_total'), trips + 1);
    await until(
      'the breaker to close',
      async () => (await metric(stack, 'recgate_upstream_breaker_open')) === 0,
    );
  });
});

describe('HEAD on a recording not cached', () => {
  it("answers from the upstream HEAD: a GET's headers, no media GET, nothing on disk", async (t) => {
    const stack = await startStack({ config: { coldDownloadRate: 0 } });
    t.after(() => stack.close());
    const token = await stack.token('biz-a');
    const call = await coldCall(stack, 'biz-a', 30_000);
    const head = await download(stack, token, call.callSid, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(call.size));
    assert.equal(head.headers['accept-ranges'], 'bytes');
    assert.equal(head.headers['content-type'], 'audio/mpeg');
    assert.equal(head.body.length, 0);
    const stats = stack.emulator.stats();
    assert.equal(stats.media_requests[call.recordingSid], undefined, '0 GET media requests');
    assert.equal(stats.head_requests[call.recordingSid], 1);
    assert.deepEqual(await callFiles(`${stack.dataDir}/recordings`, call.callSid), [], 'nothing on disk');

    // A ranged HEAD gets what serve() gives a ranged HEAD on a cached file: the whole representation's headers.
    const ranged = await download(stack, token, call.callSid, {
      method: 'HEAD',
      headers: { range: 'bytes=0-99' },
    });
    assert.equal(ranged.status, 200);
    assert.equal(ranged.headers['content-length'], String(call.size));

    // The GET that downloads it agrees with the HEAD.
    const get = await download(stack, token, call.callSid);
    assert.equal(get.status, 200);
    assert.equal(get.headers.etag, head.headers.etag);
    assert.equal(get.headers['last-modified'], head.headers['last-modified']);
    assert.equal(get.headers['content-length'], head.headers['content-length']);
    // Once cached, a HEAD is answered from disk.
    await settledFiles(`${stack.dataDir}/recordings`, call.callSid);
    const cachedHead = await download(stack, token, call.callSid, { method: 'HEAD' });
    assert.equal(cachedHead.headers.etag, head.headers.etag);
    assert.equal(stack.emulator.stats().head_requests[call.recordingSid], 2);
  });

  it('a cached recording answers a HEAD from disk without asking upstream', async (t) => {
    const stack = await startStack({ config: { coldDownloadRate: 0 } });
    t.after(() => stack.close());
    const token = await stack.token('biz-a');
    const call = await coldCall(stack, 'biz-a');
    const body = Buffer.alloc(5000, 7);
    await storeRecording(
      `${stack.dataDir}/recordings`,
      call.callSid,
      call.recordingSid,
      body,
      new Date(2025, 0, 1),
    );
    const head = await download(stack, token, call.callSid, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '5000');
    assert.equal(stack.emulator.stats().total_head_requests, 0);
  });
});

describe('cold-download rate limit', () => {
  it('counts only new downloads of the business, and answers 429 RECGATE_RATE_LIMITED with Retry-After', async (t) => {
    const stack = await startStack({ config: { coldDownloadRate: 0.01, coldDownloadBurst: 2 } });
    t.after(() => stack.close());
    const [a, b] = [await stack.token('biz-a'), await stack.token('biz-b')];
    const calls = [
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
    ];
    // Two requests joining one download take one token.
    const joined = await Promise.all([
      download(stack, a, calls[0]!.callSid),
      download(stack, a, calls[0]!.callSid),
    ]);
    assert.deepEqual(
      joined.map((r) => r.status),
      [200, 200],
    );
    // A hit takes none.
    assert.equal((await download(stack, a, calls[0]!.callSid)).status, 200);
    assert.equal((await download(stack, a, calls[1]!.callSid)).status, 200);
    const limited = await download(stack, a, calls[2]!.callSid);
    assertError(limited, 429, 'RECGATE_RATE_LIMITED');
    assert.match(String(limited.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal(stack.emulator.stats().media_requests[calls[2]!.recordingSid], undefined);
    // Another business has its own bucket; business A's cached recordings still play.
    assert.equal((await download(stack, b, (await coldCall(stack, 'biz-b')).callSid)).status, 200);
    assert.equal((await download(stack, a, calls[1]!.callSid)).status, 200);
    assert.ok((await metric(stack, 'recgate_upstream_rejections_total{reason="rate_limited"}')) >= 1);
  });
});
