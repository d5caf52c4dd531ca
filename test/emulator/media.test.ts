import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { CreatedRecording, Emulator } from '../../src/emulator/index.js';
import { evaluateRange, writeBody } from '../../src/emulator/media.js';
import { sha256 } from '../helpers/common.js';
import { accountUrl, api, basic, start } from './helpers.js';
import { walkMp3 } from './mp3-frames.js';

describe('evaluateRange', () => {
  const base = { ifRange: undefined, etag: '"x"', lastModified: 'Tue, 31 Aug 2010 20:36:28 GMT', size: 1000 };
  it('parses single byte ranges', () => {
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=0-99' }), { kind: 'partial', start: 0, end: 99 });
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=990-' }), {
      kind: 'partial',
      start: 990,
      end: 999,
    });
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=-10' }), {
      kind: 'partial',
      start: 990,
      end: 999,
    });
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=-5000' }), {
      kind: 'partial',
      start: 0,
      end: 999,
    });
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=10-5000' }), {
      kind: 'partial',
      start: 10,
      end: 999,
    });
  });
  it('reports unsatisfiable ranges', () => {
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=1000-' }), { kind: 'unsatisfiable' });
    assert.deepEqual(evaluateRange({ ...base, range: 'bytes=-0' }), { kind: 'unsatisfiable' });
  });
  it('ignores what it does not honour', () => {
    for (const range of ['bytes=0-1,5-6', 'items=0-1', 'bytes=5-1', 'bytes=-', 'bytes=a-b']) {
      assert.deepEqual(evaluateRange({ ...base, range }), { kind: 'full' }, range);
    }
  });
  it('honours If-Range by strong ETag or exact date', () => {
    const range = 'bytes=0-0';
    assert.equal(evaluateRange({ ...base, range, ifRange: '"x"' }).kind, 'partial');
    assert.equal(evaluateRange({ ...base, range, ifRange: '"y"' }).kind, 'full');
    assert.equal(evaluateRange({ ...base, range, ifRange: 'W/"x"' }).kind, 'full');
    assert.equal(evaluateRange({ ...base, range, ifRange: base.lastModified }).kind, 'partial');
    assert.equal(evaluateRange({ ...base, range, ifRange: 'Wed, 01 Sep 2010 20:36:28 GMT' }).kind, 'full');
  });
});

describe('writeBody', () => {
  /**
   * Writes a body of `bytes` at `bandwidth` to a response that takes every write at once, and says what it
   * saw: each write's size, whether the response ended, the bytes counted by `onBytes`, and the time taken.
   */
  async function drive(bytes: number, bandwidth: number) {
    const writes: number[] = [];
    let ended = false;
    let counted = 0;
    const res = Object.assign(new EventEmitter(), {
      write(chunk: Buffer, done?: (err?: Error) => void) {
        writes.push(chunk.byteLength);
        done?.();
        return true;
      },
      end() {
        ended = true;
      },
    });
    const started = performance.now();
    await writeBody(res as unknown as ServerResponse, {
      body: Buffer.alloc(bytes, 7),
      bandwidth,
      ending: { kind: 'end' },
      onBytes: (n) => {
        counted += n;
      },
      closing: new Promise<void>(() => undefined),
    });
    return { writes, ended, counted, elapsed: performance.now() - started };
  }

  it('paces a body in tick-sized writes, not a few bytes at a time', async () => {
    const { writes, ended, counted, elapsed } = await drive(200_000, 4_000_000);
    assert.equal(counted, 200_000);
    assert.ok(ended);
    // A tick (15 ms) at 4 MB/s is 60,000 bytes: the bucket's first tick at once, then one write per tick.
    // Before, each pass of the loop wrote what the microseconds since the last had earned: thousands of writes.
    assert.ok(writes.length <= 5, `${writes.length} writes: ${writes.slice(0, 10).join(', ')}`);
    assert.ok(
      writes.slice(0, -1).every((n) => n >= 60_000),
      `every write but the last is a tick's worth: ${writes.join(', ')}`,
    );
    // Still paced: 140,000 bytes beyond the first tick take 35 ms at 4 MB/s.
    assert.ok(elapsed >= 30, `paced: ${elapsed} ms`);
  });

  it('paces a fast link, whose tick is more than a chunk, in 64 KiB writes', {
    timeout: 10_000,
  }, async () => {
    // 20 MB/s: a tick's worth is 300,000 bytes, more than the 64 KiB a write takes at most.
    const { writes, ended, elapsed } = await drive(1_000_000, 20_000_000);
    assert.ok(ended);
    assert.equal(
      writes.reduce((a, b) => a + b, 0),
      1_000_000,
    );
    assert.ok(
      writes.slice(0, -1).every((n) => n === 65_536),
      `64 KiB writes: ${writes.join(', ')}`,
    );
    // 700,000 bytes beyond the first tick take 35 ms at 20 MB/s.
    assert.ok(elapsed >= 30, `paced: ${elapsed} ms`);
  });

  it('sends an unthrottled body in 64 KiB writes', async () => {
    const { writes } = await drive(200_000, 0);
    assert.deepEqual(writes, [65_536, 65_536, 65_536, 3_392]);
  });
});

describe('emulator media', () => {
  let emulator: Emulator;
  let recording: CreatedRecording;
  let full: Buffer;
  const media = (suffix = '.mp3', headers: Record<string, string> = {}, method = 'GET') =>
    api(emulator, `Recordings/${recording.recording_sid}${suffix}`, { headers, method });

  before(async () => {
    emulator = await start();
    recording = await emulator.createRecording({ bytes: 200_000 });
    full = Buffer.from(await (await media()).arrayBuffer());
  });
  after(() => emulator.close());
  beforeEach(() => {
    emulator.reset();
    emulator.setThrottle({ ttfbMs: 0, bandwidth: 0, rangeSupport: true });
  });

  it('serves the exact generated MP3 with validators', async () => {
    const res = await media();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'audio/mpeg');
    assert.equal(res.headers.get('content-length'), '200000');
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    assert.match(res.headers.get('etag')!, /^"[0-9a-f]{64}"$/);
    assert.ok(!Number.isNaN(Date.parse(res.headers.get('last-modified')!)));
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.length, 200_000);
    assert.equal(sha256(body), recording.sha256);
    walkMp3(body);
    const bare = Buffer.from(await (await media('')).arrayBuffer());
    assert.ok(bare.equals(body));
  });

  it('serves a real WAV', async () => {
    const res = await media('.wav');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'audio/x-wav');
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.toString('latin1', 0, 4), 'RIFF');
    assert.equal(body.toString('latin1', 8, 12), 'WAVE');
    assert.equal(body.readUInt32LE(40), body.length - 44);
    assert.equal(res.headers.get('content-length'), String(body.length));
    const ranged = await media('.wav', { range: 'bytes=0-43' });
    assert.equal(ranged.status, 206);
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(body.subarray(0, 44)));
  });

  it('answers HEAD with headers only and counts it apart from GET', async () => {
    const res = await media('.mp3', {}, 'HEAD');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), '200000');
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    assert.equal((await res.arrayBuffer()).byteLength, 0);
    const stats = emulator.stats();
    assert.equal(stats.total_media_requests, 0);
    assert.deepEqual(stats.head_requests, { [recording.recording_sid!]: 1 });
    assert.equal(stats.total_head_requests, 1);
  });

  it('reports the GET media requests answered now and the most at once', async () => {
    emulator.setThrottle({ ttfbMs: 200 });
    const pending = [media(), media(), media()];
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(emulator.stats().active_media_requests, 3);
    await Promise.all(pending.map(async (p) => (await p).arrayBuffer()));
    let stats = emulator.stats();
    assert.equal(stats.active_media_requests, 0);
    assert.equal(stats.max_concurrent_media_requests, 3);
    emulator.reset();
    stats = emulator.stats();
    assert.equal(stats.max_concurrent_media_requests, 0);
    assert.equal(stats.total_head_requests, 0);
  });

  it('serves ranges: 206 with Content-Range, suffix, open-ended, clamped', async () => {
    const cases: Array<[string, number, number]> = [
      ['bytes=0-99', 0, 99],
      ['bytes=199000-', 199_000, 199_999],
      ['bytes=-500', 199_500, 199_999],
      ['bytes=1000-999999999', 1000, 199_999],
    ];
    for (const [range, start, end] of cases) {
      const res = await media('.mp3', { range });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers.get('content-range'), `bytes ${start}-${end}/200000`);
      assert.equal(res.headers.get('content-length'), String(end - start + 1));
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(full.subarray(start, end + 1)), range);
    }
  });

  it('answers 416 with Content-Range */size when unsatisfiable', async () => {
    for (const range of ['bytes=200000-', 'bytes=-0']) {
      const res = await media('.mp3', { range });
      assert.equal(res.status, 416, range);
      assert.equal(res.headers.get('content-range'), 'bytes */200000');
      await res.arrayBuffer();
    }
  });

  it('honours If-Range', async () => {
    const etag = `"${recording.sha256}"`;
    const match = await media('.mp3', { range: 'bytes=0-9', 'if-range': etag });
    assert.equal(match.status, 206);
    await match.arrayBuffer();
    const stale = await media('.mp3', { range: 'bytes=0-9', 'if-range': '"stale"' });
    assert.equal(stale.status, 200);
    assert.equal((await stale.arrayBuffer()).byteLength, 200_000);
  });

  it('answers 304 to a matching If-None-Match', async () => {
    const res = await media('.mp3', { 'if-none-match': `"${recording.sha256}"` });
    assert.equal(res.status, 304);
  });

  it('ignores Range and drops Accept-Ranges when range support is off', async () => {
    emulator.setThrottle({ rangeSupport: false });
    const res = await media('.mp3', { range: 'bytes=0-99' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('accept-ranges'), null);
    assert.equal(res.headers.get('content-range'), null);
    assert.equal((await res.arrayBuffer()).byteLength, 200_000);
    const head = await media('.mp3', {}, 'HEAD');
    assert.equal(head.headers.get('accept-ranges'), null);
  });

  it('starts without range support when told', async () => {
    const plain = await start({ rangeSupport: false });
    try {
      const created = await plain.createRecording({ bytes: 3000 });
      const res = await api(plain, `Recordings/${created.recording_sid}.mp3`, {
        headers: { range: 'bytes=0-1' },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('accept-ranges'), null);
      assert.equal((await res.arrayBuffer()).byteLength, 3000);
    } finally {
      await plain.close();
    }
  });

  it('counts GET media requests and bytes per recording, and reset forgets them', async () => {
    const other = await emulator.createRecording({ bytes: 5000 });
    await (await media()).arrayBuffer();
    await (await media('.mp3', { range: 'bytes=0-999' })).arrayBuffer();
    await (await api(emulator, `Recordings/${other.recording_sid}`)).arrayBuffer();
    await (await media('.json')).arrayBuffer();
    const stats = emulator.stats();
    assert.deepEqual(stats.media_requests, { [recording.recording_sid!]: 2, [other.recording_sid!]: 1 });
    assert.equal(stats.total_media_requests, 3);
    assert.deepEqual(stats.media_bytes, {
      [recording.recording_sid!]: 201_000,
      [other.recording_sid!]: 5000,
    });
    assert.equal(stats.total_media_bytes, 206_000);
    const viaHttp = await (await fetch(`${emulator.url}/__emulator/stats`)).json();
    assert.deepEqual(viaHttp, stats);
    const reset = await fetch(`${emulator.url}/__emulator/reset`, { method: 'POST' });
    assert.equal(reset.status, 200);
    assert.equal(emulator.stats().total_media_requests, 0);
    assert.deepEqual(emulator.stats().media_requests, {});
  });

  it('throttles: first byte after ttfb, body paced to the bandwidth in many chunks', async () => {
    const big = await emulator.createRecording({ bytes: 500_000 });
    emulator.setThrottle({ ttfbMs: 150, bandwidth: 1_000_000 });
    const started = performance.now();
    const res = await fetch(accountUrl(emulator, `Recordings/${big.recording_sid}.mp3`), {
      headers: { authorization: basic(emulator.accountSid, emulator.authToken) },
    });
    const headersAt = performance.now() - started;
    assert.ok(headersAt >= 140, `headers after ${headersAt} ms`);
    let chunks = 0;
    let bytes = 0;
    let firstChunkAt = 0;
    for await (const chunk of res.body!) {
      if (chunks === 0) firstChunkAt = performance.now() - started;
      chunks++;
      bytes += (chunk as Uint8Array).byteLength;
    }
    const total = performance.now() - started;
    assert.equal(bytes, 500_000);
    assert.ok(total >= 150 + 400, `took ${total} ms`);
    assert.ok(firstChunkAt < total - 200, 'bytes arrive while the body streams, not in one late burst');
    assert.ok(chunks >= 5, `${chunks} chunks`);
  });

  it('holds up with hundreds of concurrent throttled media requests', async () => {
    emulator.setThrottle({ bandwidth: 200_000 });
    const started = performance.now();
    const bodies = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const res = await media('.mp3', { range: `bytes=${i * 100}-${i * 100 + 19_999}` });
        assert.equal(res.status, 206);
        return Buffer.from(await res.arrayBuffer());
      }),
    );
    const elapsed = performance.now() - started;
    bodies.forEach((body, i) => {
      assert.ok(body.equals(full.subarray(i * 100, i * 100 + 20_000)));
    });
    assert.ok(elapsed >= 80, `paced: ${elapsed} ms`);
    assert.ok(elapsed < 15_000, `took ${elapsed} ms`);
    assert.equal(emulator.stats().media_requests[recording.recording_sid!], 200);
  });
});
