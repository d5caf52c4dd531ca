/**
 * The upstream breaker, HEAD from upstream metadata, and the per-business cold-download rate limit, end to
 * end (gateway + emulator in-process).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { startEmulator } from '../../src/emulator/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
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
    // Cached, not still being committed: a HEAD between the download's end and its commit asks Twilio's HEAD.
    const cachedRef = {
      ownerCallSid: cached.callSid as CallSid,
      recordingSid: cached.recordingSid as RecordingSid,
    };
    await until(
      'the first recording is cached',
      async () => (await stack.gateway.cache.state(cachedRef)).state === 'cached',
      30_000,
    );
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

  it("shares the download this process runs: the GET's headers, no upstream HEAD, no second download", async (t) => {
    const stack = await startStack({ config: { coldDownloadRate: 0 } });
    t.after(() => stack.close());
    const token = await stack.token('biz-a');
    const call = await coldCall(stack, 'biz-a', 200_000);
    // Headers after 400 ms, the body over about 2 s: HEADs come both before the download's headers (they
    // wait for them, as a GET waits) and while its body is still coming.
    stack.emulator.setThrottle({ ttfbMs: 400, bandwidth: 100_000 });
    const get = download(stack, token, call.callSid);
    await until(
      'the download reaches Twilio',
      () => stack.emulator.stats().media_requests[call.recordingSid] === 1,
      30_000,
    );
    const early = await download(stack, token, call.callSid, { method: 'HEAD' });
    const ref = { ownerCallSid: call.callSid as CallSid, recordingSid: call.recordingSid as RecordingSid };
    assert.equal((await stack.gateway.cache.state(ref)).state, 'downloading', 'still downloading');
    const later = await download(stack, token, call.callSid, {
      method: 'HEAD',
      headers: { range: 'bytes=0-99' },
    });
    const full = await get;
    assert.equal(full.status, 200);
    for (const head of [early, later]) {
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers['content-length'], String(call.size));
      assert.equal(head.headers.etag, full.headers.etag);
      assert.equal(head.headers['last-modified'], full.headers['last-modified']);
      assert.equal(head.headers['accept-ranges'], 'bytes');
    }
    const stats = stack.emulator.stats();
    assert.equal(stats.head_requests[call.recordingSid], undefined, 'no upstream HEAD');
    assert.equal(stats.media_requests[call.recordingSid], 1, 'one download');
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

describe('HEADs on recordings not cached: the per-process cap, and the GET when Twilio gives no size', () => {
  it('beyond --cold-head-concurrency a HEAD waits its turn, then answers 503 BUSY; cached ones are not capped', async (t) => {
    const stack = await startStack({ config: { coldDownloadRate: 0, coldHeadConcurrency: 1 } });
    const client = new AbortController();
    t.after(() => {
      client.abort();
      return stack.close();
    });
    const token = await stack.token('biz-a');
    const [held, waiting, cached] = [
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
      await coldCall(stack, 'biz-a'),
    ];
    await storeRecording(
      `${stack.dataDir}/recordings`,
      cached.callSid,
      cached.recordingSid,
      Buffer.alloc(5000, 7),
      new Date(2025, 0, 1),
    );
    const busyBefore = await metric(stack, 'recgate_upstream_rejections_total{reason="head_busy"}');
    // Twilio holds HEADs for a minute: the one slot stays taken while its client is there.
    stack.emulator.setThrottle({ ttfbMs: 60_000 });
    const first = download(stack, token, held.callSid, { method: 'HEAD', signal: client.signal }).catch(
      () => undefined,
    );
    await until(
      'the first HEAD reaches Twilio',
      () => stack.emulator.stats().head_requests[held.recordingSid] === 1,
      30_000,
    );
    // A second recording's HEAD finds no slot: it waits (5 s), then 503 without asking Twilio. Were it not
    // capped, it would hang a minute at the emulator.
    const refused = await download(stack, token, waiting.callSid, { method: 'HEAD' });
    // A HEAD has no body to name the code: 503 with BUSY's Retry-After, and the head_busy count, do.
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.equal(stack.emulator.stats().head_requests[waiting.recordingSid], undefined);
    assert.equal(
      await metric(stack, 'recgate_upstream_rejections_total{reason="head_busy"}'),
      busyBefore + 1,
    );
    // A cached recording's HEAD is answered from disk, slot or no slot.
    const fromDisk = await download(stack, token, cached.callSid, { method: 'HEAD' });
    assert.deepEqual([fromDisk.status, fromDisk.headers['content-length']], [200, '5000']);
    // The first client leaves: its HEAD is cancelled and the slot is free for the waiting recording.
    stack.emulator.setThrottle({ ttfbMs: 0 });
    client.abort();
    await first;
    let head = await download(stack, token, waiting.callSid, { method: 'HEAD' });
    const deadline = Date.now() + 30_000;
    while (head.status === 503 && Date.now() < deadline) {
      head = await download(stack, token, waiting.callSid, { method: 'HEAD' });
    }
    assert.deepEqual([head.status, head.headers['content-length']], [200, String(waiting.size)]);
    assert.equal(stack.emulator.stats().head_requests[waiting.recordingSid], 1);
    assert.equal(stack.emulator.stats().total_media_requests, 0, 'no HEAD became a download');
  });

  it("falls back to a full GET (a download, through admission) when Twilio's HEAD gives no size", async (t) => {
    // A proxy in front of the emulator that drops Content-Length from media HEAD answers.
    let emulatorUrl = '';
    const proxy = http.createServer((req, res) => {
      const upstream = http.request(
        `${emulatorUrl}${req.url}`,
        { method: req.method, headers: req.headers },
        (answer) => {
          const headers = { ...answer.headers };
          if (req.method === 'HEAD' && req.url?.includes('/Recordings/')) delete headers['content-length'];
          res.writeHead(answer.statusCode ?? 502, headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
    const port = (proxy.address() as AddressInfo).port;
    const emulator = await startEmulator({ port: 0, logger: false });
    emulatorUrl = emulator.url;
    const stack = await startStack({
      sharedEmulator: emulator,
      config: { coldDownloadRate: 0, twilioApiBase: `http://127.0.0.1:${port}` },
    });
    t.after(async () => {
      await stack.close();
      await emulator.close();
    });
    const token = await stack.token('biz-a');
    const call = await coldCall(stack, 'biz-a', 12_000);
    const permits = await metric(stack, 'recgate_upstream_queue_wait_seconds_count');

    const head = await download(stack, token, call.callSid, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(call.size));
    assert.equal(head.body.length, 0);
    const stats = stack.emulator.stats();
    assert.equal(stats.head_requests[call.recordingSid], 1, 'the HEAD was asked first');
    assert.equal(stats.media_requests[call.recordingSid], 1, 'then one full GET');
    assert.equal(await metric(stack, 'recgate_upstream_queue_wait_seconds_count'), permits + 1, 'admitted');
    // The GET downloaded the recording: it is cached, and a GET is a hit with the HEAD's validators.
    await settledFiles(`${stack.dataDir}/recordings`, call.callSid);
    const get = await download(stack, token, call.callSid);
    assert.equal(get.status, 200);
    assert.equal(get.body.length, call.size);
    assert.equal(get.headers.etag, head.headers.etag);
    assert.equal(stack.emulator.stats().media_requests[call.recordingSid], 1);
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
