import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { createError, isRecgateError, storageError } from '../../src/errors.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { createRecordingCache, FsLocker } from '../../src/recordings/index.js';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import type { PartialWriter } from '../../src/recordings/store/store.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import { isCode, until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import {
  audioBytes,
  FakeUpstream,
  finishedFiles,
  MP3_FRAME_BYTES,
  makeCache,
  newRef,
  ownFiles,
  readAll,
  settled,
  tempDir,
} from './helpers.js';

async function readRange(
  cache: ReturnType<typeof makeCache>['cache'],
  ref: RecordingRef,
  start?: number,
  end?: number,
) {
  const rec = await cache.open(ref);
  return readAll(rec.createReadStream(start ?? 0, end ?? rec.size - 1));
}

async function quiet(dir: string, ref: RecordingRef): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (!existsSync(join(dir, `.${ref.ownerCallSid}.lock`))) return;
    await sleep(5);
  }
  assert.fail('the lock was never released');
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.startsWith('.'));
}

describe('recording cache', () => {
  it('validates options and names an unwritable directory', (t) => {
    const dir = tempDir(t);
    const upstream = new FakeUpstream({ data: Buffer.alloc(1) });
    const { logger } = captureLogs({ plain: true });
    assert.throws(() => createRecordingCache({ dir: '', upstream, logger }), /options\.dir/);
    assert.throws(() => createRecordingCache({ dir, upstream: {} as Upstream, logger }), /options\.upstream/);
    assert.throws(
      () => createRecordingCache({ dir, upstream, logger, lockTimeoutMs: 0 }),
      /options\.lockTimeoutMs/,
    );
    assert.throws(
      () => createRecordingCache({ dir, upstream, logger, pollIntervalMs: 1.5 }),
      /options\.pollIntervalMs/,
    );
    writeFileSync(join(dir, 'file'), '');
    const bad = join(dir, 'file', 'recordings');
    assert.throws(
      () => createRecordingCache({ dir: bad, upstream, logger }),
      (err: unknown) =>
        isRecgateError(err) && err.code === 'RECGATE_STORAGE_ERROR' && err.message.includes(bad),
    );
    const nested = join(dir, 'a', 'b');
    createRecordingCache({ dir: nested, upstream, logger });
    assert.ok(statSync(nested).isDirectory(), 'creates the directory');
  });

  it('misses once, then hits; same ETag and Last-Modified in flight and from disk; state follows', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const upstream = new FakeUpstream({ data, chunkDelayMs: 5 });
    const { cache, names } = makeCache(t, dir, upstream);
    const ref = newRef();
    assert.deepEqual(await cache.state(ref), { state: 'absent' });
    const first = await cache.open(ref);
    assert.equal(first.outcome, 'miss');
    assert.equal(first.size, data.length);
    assert.equal(first.complete, false);
    assert.equal(first.etag, `"${ref.recordingSid}-${data.length}"`);
    assert.equal(first.lastModified.toUTCString(), 'Tue, 01 Apr 2025 10:00:00 GMT');
    const during = await cache.state(ref);
    assert.equal(during.state, 'downloading');
    assert.deepEqual(await readAll(first.createReadStream(0, data.length - 1)), data);
    await settled(dir, ref);
    await until('recording_saved', () => names().includes('recording_saved'), 5000);
    const second = await cache.open(ref);
    assert.equal(second.outcome, 'hit');
    assert.equal(second.complete, true);
    assert.equal(second.etag, first.etag);
    assert.equal(second.lastModified.getTime(), first.lastModified.getTime());
    assert.deepEqual(await readAll(second.createReadStream(100, 199)), data.subarray(100, 200));
    assert.deepEqual(await cache.state(ref), { state: 'cached', size: data.length });
    assert.equal(upstream.calls.length, 1);
    assert.deepEqual(names(), ['cache_miss', 'recording_saved', 'cache_hit']);
    assert.deepEqual(readdirSync(dir).sort(), finishedFiles(ref));
    assert.deepEqual(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)), data);
  });

  it('single flight: 200 concurrent opens with full and range reads make exactly one upstream request', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1024 * 1024 + 17);
    const upstream = new FakeUpstream({ data, ttfbMs: 30, chunkSize: 32 * 1024, chunkDelayMs: 2 });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    const jobs = Array.from({ length: 200 }, async (_, i) => {
      const rec = await cache.open(ref);
      let start = 0;
      let end = rec.size - 1;
      if (i % 2 === 1) {
        start = (i * 7919) % rec.size;
        end = Math.min(rec.size - 1, start + ((i * 104_729) % 300_000));
      } else if (i % 4 === 2) {
        start = rec.size - 500;
      }
      const body = await readAll(rec.createReadStream(start, end));
      assert.ok(body.equals(data.subarray(start, end + 1)), `request ${i} bytes ${start}-${end}`);
      return rec.outcome;
    });
    const outcomes = await Promise.all(jobs);
    assert.equal(upstream.calls.length, 1);
    assert.equal(outcomes.filter((o) => o === 'miss').length, 1);
    assert.ok(outcomes.every((o) => o === 'miss' || o === 'wait'));
  });

  it('streams while fetching: first bytes long before the download ends', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(16 * 16 * 1024);
    // 16 chunks, one every 60 ms: about a second for the whole body.
    const upstream = new FakeUpstream({ data, chunkDelayMs: 60 });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    const started = performance.now();
    const rec = await cache.open(ref);
    const stream = rec.createReadStream(0, rec.size - 1);
    let firstByteMs = -1;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(chunk as Buffer);
    }
    const totalMs = performance.now() - started;
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.ok(totalMs > 800, `download took ${totalMs} ms`);
    assert.ok(firstByteMs < 400, `first byte after ${firstByteMs} ms`);
  });

  it('a slow reader buffers at most about one chunk while the download runs ahead', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(2 * 1024 * 1024);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data, chunkSize: 64 * 1024 }));
    const ref = newRef();
    const rec = await cache.open(ref);
    const stream = rec.createReadStream(0, rec.size - 1);
    // Starts the stream filling its buffer without consuming anything: a client that reads nothing.
    stream.read(0);
    await settled(dir, ref);
    await sleep(20);
    assert.ok(stream.readableLength > 0, 'the stream did read ahead');
    assert.ok(stream.readableLength <= 2 * 64 * 1024, `buffered ${stream.readableLength} bytes`);
    assert.ok((await readAll(stream)).equals(data));
  });

  it('a second cache instance on the same directory (another worker) waits, streams, and never fetches', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(16 * 16 * 1024);
    const upstreamA = new FakeUpstream({ data, chunkDelayMs: 50 });
    const upstreamB = new FakeUpstream({ data });
    const a = makeCache(t, dir, upstreamA);
    const b = makeCache(t, dir, upstreamB);
    const ref = newRef();
    const recA = await a.cache.open(ref);
    const started = performance.now();
    const recB = await b.cache.open(ref);
    assert.equal(recB.outcome, 'wait');
    assert.equal(recB.size, data.length);
    assert.equal(recB.etag, recA.etag);
    assert.equal(recB.lastModified.getTime(), recA.lastModified.getTime());
    let firstByteMs = -1;
    const chunks: Buffer[] = [];
    for await (const chunk of recB.createReadStream(0, recB.size - 1)) {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(chunk as Buffer);
    }
    const totalMs = performance.now() - started;
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.ok(firstByteMs < totalMs / 2, `first byte after ${firstByteMs} of ${totalMs} ms`);
    assert.equal(upstreamA.calls.length, 1);
    assert.equal(upstreamB.calls.length, 0);
    assert.ok(b.names().includes('lock_wait'));
    await settled(dir, ref);
    await sleep(50);
    assert.ok(b.names().includes('available_while_waiting'));
    assert.equal((await b.cache.open(ref)).outcome, 'hit');
  });

  it('a holder whose body breaks off resumes with Range and If-Range', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(300_000);
    const upstream = new FakeUpstream({ data, failAt: 120_000, failCalls: 1 });
    const { cache, events } = makeCache(t, dir, upstream);
    const ref = newRef();
    assert.ok((await readRange(cache, ref)).equals(data));
    assert.equal(upstream.calls.length, 2);
    assert.equal(upstream.calls[1]?.start, 120_000);
    assert.equal(upstream.calls[1]?.ifRange, '"up-1"');
    assert.deepEqual(events.find((e) => e[0] === 'download_resumed')?.[1].offset, 120_000);
    await settled(dir, ref);
  });

  it('without Range support a broken download restarts from 0, and readers still get the right bytes', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(300_000);
    const upstream = new FakeUpstream({
      data,
      failAt: 150_000,
      failCalls: 1,
      acceptsRanges: false,
      chunkDelayMs: 1,
    });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    const bodies = await Promise.all([readRange(cache, ref), readRange(cache, ref, 1000, 200_000)]);
    assert.ok(bodies[0].equals(data));
    assert.ok(bodies[1].equals(data.subarray(1000, 200_001)));
    assert.equal(upstream.calls.length, 2);
    assert.equal(upstream.calls[1]?.start, undefined);
    await settled(dir, ref);
    assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(data));
  });

  it('a failure with no recovery errors the streams (never ends short), leaves no final file; the next open starts afresh', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const upstream = new FakeUpstream({ data, failAt: 100_000, chunkDelayMs: 2 });
    const { cache, events } = makeCache(t, dir, upstream, { maxResumeAttempts: 1 });
    const ref = newRef();
    const rec = await cache.open(ref);
    const recLate = await cache.open(ref);
    const received: number[] = [0, 0];
    const drain = async (stream: NodeJS.ReadableStream, i: number) => {
      for await (const chunk of stream) received[i]! += (chunk as Buffer).length;
    };
    await assert.rejects(
      drain(rec.createReadStream(0, rec.size - 1), 0),
      isCode('RECGATE_UPSTREAM_UNAVAILABLE'),
    );
    await assert.rejects(
      drain(recLate.createReadStream(150_000, 199_999), 1),
      isCode('RECGATE_UPSTREAM_UNAVAILABLE'),
    );
    assert.equal(received[0], 100_000);
    assert.equal(received[1], 0);
    assert.equal(existsSync(join(dir, `${ref.ownerCallSid}.mp3`)), false);
    assert.equal(upstream.calls.length, 2, 'one retry by resume');
    assert.equal(events.find((e) => e[0] === 'download_failed')?.[1].code, 'RECGATE_UPSTREAM_UNAVAILABLE');
    upstream.options = { data };
    const again = await cache.open(ref);
    assert.equal(again.outcome, 'miss');
    assert.ok((await readAll(again.createReadStream(0, again.size - 1))).equals(data));
    assert.equal(upstream.calls.length, 3);
    assert.equal(upstream.calls[2]?.start, 100_000, 'the fresh download resumes the bytes already on disk');
    await settled(dir, ref);
  });

  it("a body that keeps breaking fails with the last body's own error: a stall is a timeout", async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const stalled = () =>
      createError('RECGATE_UPSTREAM_TIMEOUT', { cause: new Error('stalled after 100000 bytes') });
    const upstream = new FakeUpstream({ data, failAt: 100_000, failWith: stalled });
    const { cache, events } = makeCache(t, dir, upstream, { maxResumeAttempts: 2 });
    const rec = await cache.open(newRef());
    await assert.rejects(readAll(rec.createReadStream(0, rec.size - 1)), isCode('RECGATE_UPSTREAM_TIMEOUT'));
    assert.equal(upstream.calls.length, 3, 'the first exchange and two resumptions');
    assert.equal(events.find((e) => e[0] === 'download_failed')?.[1].code, 'RECGATE_UPSTREAM_TIMEOUT');
  });

  it('atomicity: nothing under the final name until complete; a short body is never renamed', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(400_000);
    const upstream = new FakeUpstream({ data, chunkDelayMs: 3 });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    const finalPath = join(dir, `${ref.ownerCallSid}.mp3`);
    let checks = 0;
    let bad = '';
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        if (existsSync(finalPath)) {
          const size = statSync(finalPath).size;
          if (size !== data.length) bad = `final name seen with ${size} bytes`;
        }
        checks++;
        await sleep(1);
      }
    })();
    const body = await readRange(cache, ref);
    await settled(dir, ref);
    watching = false;
    await watcher;
    assert.equal(bad, '');
    assert.ok(checks > 20, `${checks} checks`);
    assert.ok(body.equals(data));

    const shortRef = newRef();
    const shortUpstream = new FakeUpstream({ data, shortAt: 250_000 });
    const short = makeCache(t, dir, shortUpstream, { maxResumeAttempts: 2 });
    const rec = await short.cache.open(shortRef);
    await assert.rejects(
      readAll(rec.createReadStream(0, rec.size - 1)),
      isCode('RECGATE_UPSTREAM_UNAVAILABLE'),
    );
    assert.equal(existsSync(join(dir, `${shortRef.ownerCallSid}.mp3`)), false);
    assert.equal(shortUpstream.calls.length, 3);
  });

  it('a full disk becomes RECGATE_STORAGE_FULL and frees the partial', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const enospc = () =>
      Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    class FullDiskStore extends FsRecordingStore {
      override async beginPartial(id: string, meta: Parameters<FsRecordingStore['beginPartial']>[1]) {
        const writer = await super.beginPartial(id, meta);
        const append = writer.append.bind(writer);
        let written = 0;
        (writer as { append: PartialWriter['append'] }).append = async (chunk) => {
          if (written + chunk.byteLength > 64 * 1024) throw storageError(enospc());
          written += chunk.byteLength;
          await append(chunk);
        };
        return writer;
      }
    }
    const upstream = new FakeUpstream({ data });
    const { cache, events } = makeCache(t, dir, upstream, { store: new FullDiskStore({ dir }) });
    const ref = newRef();
    const rec = await cache.open(ref);
    await assert.rejects(readAll(rec.createReadStream(0, rec.size - 1)), isCode('RECGATE_STORAGE_FULL'));
    assert.equal(events.find((e) => e[0] === 'download_failed')?.[1].code, 'RECGATE_STORAGE_FULL');
    assert.equal(upstream.calls.length, 1, 'a full disk is not retried');
    await quiet(dir, ref);
    assert.deepEqual(readdirSync(dir), []);

    class NoRoomForSidecar extends FsRecordingStore {
      override async beginPartial(): Promise<PartialWriter> {
        throw storageError(enospc());
      }
    }
    const refused = new FakeUpstream({ data });
    const second = makeCache(t, dir, refused, { store: new NoRoomForSidecar({ dir }) });
    await assert.rejects(second.cache.open(newRef()), isCode('RECGATE_STORAGE_FULL'));
    // The body nobody will read is let go: left open, it would hold the upstream connection (and the
    // upstream client's close() would wait for it forever).
    for (let i = 0; i < 200 && refused.activeBodies > 0; i++) await sleep(5);
    assert.equal(refused.activeBodies, 0, 'the unread upstream body is closed');
  });

  it("an aborted open rejects promptly, with the signal's reason, while waiting for the lock", async (t) => {
    const dir = tempDir(t);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data: audioBytes(1000) }));
    const ref = newRef();
    const foreign = new FsLocker({ dir }).newLock(ref.ownerCallSid);
    assert.equal(await foreign.tryLock(), true);
    t.after(() => foreign.unlock());
    const started = performance.now();
    await assert.rejects(cache.open(ref, { signal: AbortSignal.timeout(100) }), { name: 'TimeoutError' });
    assert.ok(performance.now() - started < 1000);
    const controller = new AbortController();
    controller.abort(createError('RECGATE_CLIENT_CLOSED'));
    await assert.rejects(cache.open(ref, { signal: controller.signal }), isCode('RECGATE_CLIENT_CLOSED'));
  });

  it('makes a lazy signal only when the open may wait: never for a cached file', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(50_000);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data }));
    const ref = newRef();
    let made = 0;
    const gone = new AbortController();
    gone.abort(createError('RECGATE_CLIENT_CLOSED'));
    const lazy = () => {
      made++;
      return gone.signal;
    };
    // The first open downloads: it makes the signal, which has fired, so it rejects with its reason.
    await assert.rejects(cache.open(ref, { signal: lazy }), isCode('RECGATE_CLIENT_CLOSED'));
    assert.equal(made, 1);
    assert.deepEqual(await readAll((await cache.open(ref)).createReadStream(0, data.length - 1)), data);
    await settled(dir, ref);
    // A hit waits for nothing: the function is never called, the fired signal ends nothing.
    const hit = await cache.open(ref, { signal: lazy });
    assert.equal(hit.outcome, 'hit');
    assert.equal(made, 1);
    // A plain signal that fired still ends the call at once, hit or not.
    await assert.rejects(cache.open(ref, { signal: gone.signal }), isCode('RECGATE_CLIENT_CLOSED'));
  });

  it('openNow answers a finished file it trusts at once, as open would; else leaves it to open', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const upstream = new FakeUpstream({ data, chunkDelayMs: 5 });
    const { cache, names } = makeCache(t, dir, upstream);
    const ref = newRef();
    assert.equal(cache.openNow(ref), undefined, 'nothing stored: open downloads');
    const first = await cache.open(ref);
    assert.equal(cache.openNow(ref), undefined, 'a download runs: open joins it');
    await readAll(first.createReadStream(0, data.length - 1));
    await settled(dir, ref);
    const hit = await cache.open(ref);
    const now = cache.openNow(ref);
    assert.ok(now !== undefined && !(now instanceof Promise), 'the file open just found: at once');
    for (const key of ['outcome', 'complete', 'size', 'etag'] as const) assert.equal(now[key], hit[key], key);
    assert.equal(now.lastModified.getTime(), hit.lastModified.getTime());
    assert.deepEqual(now.readNow?.(100, 199), data.subarray(100, 200));
    assert.deepEqual(await readAll(now.createReadStream(0, data.length - 1)), data);
    assert.deepEqual(names().slice(-2), ['cache_hit', 'cache_hit'], 'a hit like any other');
    assert.equal(
      cache.openNow({ ...ref, recordingSid: newRef().recordingSid }),
      undefined,
      'another recording',
    );
    const gone = new AbortController();
    gone.abort(createError('RECGATE_CLIENT_CLOSED'));
    assert.throws(() => cache.openNow(ref, { signal: gone.signal }), isCode('RECGATE_CLIENT_CLOSED'));
    assert.equal(upstream.calls.length, 1);
    await cache.close();
    assert.throws(() => cache.openNow(ref), isCode('RECGATE_SHUTTING_DOWN'));
  });

  it('openRunning joins the download this process runs, and starts none', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const upstream = new FakeUpstream({ data, chunkDelayMs: 5 });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    assert.equal(await cache.openRunning(ref), undefined, 'nothing runs: nothing started');
    assert.equal(upstream.calls.length, 0);
    const first = cache.open(ref);
    await until('the download starts', () => upstream.calls.length === 1, 5000);
    const joined = await cache.openRunning(ref);
    assert.ok(joined !== undefined, 'the running download');
    const opened = await first;
    assert.equal(joined.outcome, 'wait');
    for (const key of ['size', 'etag', 'complete'] as const) assert.equal(joined[key], opened[key], key);
    assert.equal(joined.lastModified.getTime(), opened.lastModified.getTime());
    assert.deepEqual(await readAll(joined.createReadStream(0, data.length - 1)), data);
    await settled(dir, ref);
    assert.equal(await cache.openRunning(ref), undefined, 'finished: nothing runs');
    assert.equal(upstream.calls.length, 1);
    const gone = new AbortController();
    gone.abort(createError('RECGATE_CLIENT_CLOSED'));
    await assert.rejects(cache.openRunning(ref, { signal: gone.signal }), isCode('RECGATE_CLIENT_CLOSED'));
    await cache.close();
    await assert.rejects(cache.openRunning(ref), isCode('RECGATE_SHUTTING_DOWN'));
  });

  it("logs a hit at info, through a host's logger without a level check too, and not below the level", async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(20_000);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data }));
    const ref = newRef();
    await readAll((await cache.open(ref)).createReadStream(0, data.length - 1));
    await settled(dir, ref);
    const lines: unknown[] = [];
    const host = { info: (fields: unknown) => lines.push(fields) } as unknown as Logger;
    assert.equal((await cache.open(ref, { log: host })).outcome, 'hit');
    assert.deepEqual(lines, [
      { callSid: ref.ownerCallSid, recordingSid: ref.recordingSid, event: 'cache_hit', size: data.length },
    ]);
    const quiet = { ...host, isLevelEnabled: (level: string) => level !== 'info' } as unknown as Logger;
    assert.equal((await cache.open(ref, { log: quiet })).outcome, 'hit');
    assert.equal(lines.length, 1, 'below its level, the line is not even put together');
  });

  it('a wait with no progress from the lock holder times out with RECGATE_LOCK_TIMEOUT', async (t) => {
    const dir = tempDir(t);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data: audioBytes(1000) }), {
      lockTimeoutMs: 150,
    });
    const ref = newRef();
    const foreign = new FsLocker({ dir }).newLock(ref.ownerCallSid);
    assert.equal(await foreign.tryLock(), true);
    t.after(() => foreign.unlock());
    await assert.rejects(cache.open(ref), isCode('RECGATE_LOCK_TIMEOUT'));
  });

  it('one requester going away does not abort the download the others share', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(300_000);
    const upstream = new FakeUpstream({ data, ttfbMs: 150, chunkDelayMs: 5 });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    const controller = new AbortController();
    const impatient = cache.open(ref, { signal: controller.signal });
    const patient = cache.open(ref);
    setTimeout(() => controller.abort(createError('RECGATE_CLIENT_CLOSED')), 30);
    const started = performance.now();
    await assert.rejects(impatient, isCode('RECGATE_CLIENT_CLOSED'));
    assert.ok(performance.now() - started < 140, 'rejected before the headers came');
    const rec = await patient;
    const dropped = rec.createReadStream(0, rec.size - 1);
    dropped.once('data', () => dropped.destroy());
    const body = await readAll(rec.createReadStream(0, rec.size - 1));
    assert.ok(body.equals(data));
    assert.equal(upstream.calls.length, 1);
    await settled(dir, ref);
    assert.equal((await cache.open(ref)).outcome, 'hit');
  });

  it('takes over a partial left by a dead holder: resumes it when the upstream still matches, else restarts', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(250_000);
    const store = new FsRecordingStore({ dir });
    const ref = newRef();
    const left = await store.beginPartial(ref.ownerCallSid, {
      recordingSid: ref.recordingSid,
      size: data.length,
      etag: '"up-1"',
      lastModified: 'Tue, 01 Apr 2025 10:00:00 GMT',
      acceptsRanges: true,
      startedAt: new Date().toISOString(),
    });
    await left.append(data.subarray(0, 90_000));
    await left.close();
    const upstream = new FakeUpstream({ data });
    const { cache, events } = makeCache(t, dir, upstream);
    assert.deepEqual(await cache.state(ref), { state: 'downloading', size: data.length, received: 90_000 });
    assert.ok((await readRange(cache, ref)).equals(data));
    assert.equal(upstream.calls.length, 1);
    assert.equal(upstream.calls[0]?.start, 90_000);
    assert.equal(events.find((e) => e[0] === 'cache_miss')?.[1].leftover, 90_000);
    await settled(dir, ref);
    await until('recording_saved', () => events.some((e) => e[0] === 'recording_saved'), 5000);
    const saved = events.find((e) => e[0] === 'recording_saved')?.[1];
    assert.equal(saved?.size, data.length);
    assert.equal(saved?.bytes, data.length - 90_000);

    const changed = audioBytes(260_000);
    const ref2 = newRef();
    const stale = await store.beginPartial(ref2.ownerCallSid, {
      recordingSid: ref2.recordingSid,
      size: 250_000,
      etag: '"old"',
      lastModified: null,
      acceptsRanges: true,
      startedAt: new Date().toISOString(),
    });
    await stale.append(data.subarray(0, 90_000));
    await stale.close();
    const upstream2 = new FakeUpstream({ data: changed, etag: '"new"' });
    const second = makeCache(t, dir, upstream2);
    assert.ok((await readRange(second.cache, ref2)).equals(changed));
    assert.equal(upstream2.calls[0]?.ifRange, '"old"');
    assert.equal(upstream2.calls.length, 1);
    // Committed, and nothing of the stale generation left.
    await settled(dir, ref2);
    assert.deepEqual(readFileSync(join(dir, `${ref2.ownerCallSid}.mp3`)), changed);
  });

  it('commits a complete partial left by a holder that died before the rename, without fetching', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(50_000);
    const store = new FsRecordingStore({ dir });
    const ref = newRef();
    const left = await store.beginPartial(ref.ownerCallSid, {
      recordingSid: ref.recordingSid,
      size: data.length,
      etag: '"up-1"',
      lastModified: null,
      acceptsRanges: false,
      startedAt: new Date().toISOString(),
    });
    await left.append(data);
    await left.close();
    const upstream = new FakeUpstream({ data });
    const { cache } = makeCache(t, dir, upstream);
    assert.ok((await readRange(cache, ref)).equals(data));
    assert.equal(upstream.calls.length, 0);
    await settled(dir, ref);
  });

  it('serves an upstream without Content-Length once the download ends', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(MP3_FRAME_BYTES * 168);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data, noLength: true }));
    const ref = newRef();
    const rec = await cache.open(ref);
    assert.equal(rec.size, data.length);
    assert.ok((await readAll(rec.createReadStream(0, rec.size - 1))).equals(data));
    await settled(dir, ref);
  });

  it('without Content-Length, a body that ends inside a frame is never committed as complete', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(MP3_FRAME_BYTES * 168);
    // The connection closes cleanly 100 bytes into a frame, on every attempt.
    const upstream = new FakeUpstream({ data, noLength: true, shortAt: MP3_FRAME_BYTES * 100 + 100 });
    const { cache, named } = makeCache(t, dir, upstream, { maxResumeAttempts: 2 });
    const ref = newRef();
    await assert.rejects(cache.open(ref), isCode('RECGATE_UPSTREAM_UNAVAILABLE'));
    assert.equal(upstream.calls.length, 3, 'retried, within bounds');
    assert.match(String((named('download_failed')[0]?.err as Error | undefined)?.message), /cut short/);
    await quiet(dir, ref);
    assert.deepEqual(readdirSync(dir), [], 'nothing kept: without a size, nobody could resume it');
    // The same upstream, whole this time: the next request downloads it.
    upstream.options = { data, noLength: true };
    assert.ok((await readRange(cache, ref)).equals(data));
    await settled(dir, ref);
  });

  it('without Content-Length, a waiter in another process counts a growing file as progress', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(MP3_FRAME_BYTES * 400);
    // About 2 s of download against a 500 ms lock timeout (which a stall of a busy machine must not reach).
    const upstream = new FakeUpstream({ data, noLength: true, chunkSize: 4096, chunkDelayMs: 50 });
    const a = makeCache(t, dir, upstream, { lockTimeoutMs: 500 });
    const b = makeCache(t, dir, upstream, { lockTimeoutMs: 500 });
    const ref = newRef();
    const first = a.cache.open(ref);
    await sleep(50);
    const waiter = await b.cache.open(ref);
    assert.equal(waiter.outcome, 'wait');
    assert.ok((await readAll(waiter.createReadStream(0, waiter.size - 1))).equals(data));
    assert.ok((await readRange(a.cache, ref)).equals(data));
    await first;
    assert.equal(upstream.calls.length, 1);
  });

  it('maps upstream failures before the body to open() rejections and drops a gone recording', async (t) => {
    const dir = tempDir(t);
    const { createError } = await import('../../src/errors.js');
    const upstream = new FakeUpstream({
      data: Buffer.alloc(10),
      headersError: createError('RECGATE_RECORDING_GONE'),
    });
    const { cache } = makeCache(t, dir, upstream);
    const ref = newRef();
    await assert.rejects(cache.open(ref), isCode('RECGATE_RECORDING_GONE'));
    await assert.rejects(cache.open(ref), isCode('RECGATE_RECORDING_GONE'));
    assert.equal(upstream.calls.length, 2, 'a failure is not cached');
    await quiet(dir, ref);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('close() aborts downloads this process runs and keeps the partial for a takeover', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(300_000);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data, chunkDelayMs: 20 }));
    const ref = newRef();
    const rec = await cache.open(ref);
    const reading = readAll(rec.createReadStream(0, rec.size - 1)).then(
      () => undefined,
      (err: unknown) => err,
    );
    await sleep(60);
    await cache.close();
    isCode('RECGATE_SHUTTING_DOWN')(await reading);
    await assert.rejects(cache.open(ref), isCode('RECGATE_SHUTTING_DOWN'));
    const kept = leftovers(dir).sort();
    assert.equal(kept.length, 4, kept.join(', '));
    // The block map holds the downloader's word that no early slice went out (see seek-ahead).
    assert.match(kept[0]!, new RegExp(`^\\.${ref.ownerCallSid}\\.mp3\\.[0-9a-f]{16}\\.blocks$`));
    assert.match(kept[1]!, new RegExp(`^\\.${ref.ownerCallSid}\\.mp3\\.[0-9a-f]{16}\\.frontier$`));
    assert.match(kept[2]!, new RegExp(`^\\.${ref.ownerCallSid}\\.mp3\\.[0-9a-f]{16}\\.part$`));
    assert.equal(kept[3], `.${ref.ownerCallSid}.mp3.meta`);
    const next = makeCache(t, dir, new FakeUpstream({ data }));
    assert.ok((await readRange(next.cache, ref)).equals(data));
    await settled(dir, ref);
  });

  it('a recording too short for any seek to be far gets no block map', async (t) => {
    const dir = tempDir(t);
    // 256 KiB is seek-ahead's default minDistanceBytes: no seek into this recording can be far.
    const data = audioBytes(256 * 1024);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data, chunkDelayMs: 20 }));
    const ref = newRef();
    const rec = await cache.open(ref);
    const reading = readAll(rec.createReadStream(0, rec.size - 1));
    await sleep(60);
    const during = leftovers(dir).sort();
    assert.equal(during.length, 4, during.join(', '));
    assert.match(during[0]!, new RegExp(`^\\.${ref.ownerCallSid}\\.lock$`));
    assert.match(during[1]!, new RegExp(`^\\.${ref.ownerCallSid}\\.mp3\\.[0-9a-f]{16}\\.frontier$`));
    assert.match(during[2]!, new RegExp(`^\\.${ref.ownerCallSid}\\.mp3\\.[0-9a-f]{16}\\.part$`));
    assert.equal(during[3], `.${ref.ownerCallSid}.mp3.meta`);
    assert.ok((await reading).equals(data));
    await settled(dir, ref);
  });

  it('remove waits for the download in flight (its readers get every byte), then takes every file; the next open fetches again', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(200_000);
    const upstream = new FakeUpstream({ data, chunkDelayMs: 5 });
    const { cache, named } = makeCache(t, dir, upstream);
    const ref = newRef();
    assert.equal(await cache.remove(ref.ownerCallSid, 'purge'), null, 'nothing stored: nothing removed');
    const reading = await cache.open(ref);
    const body = readAll(reading.createReadStream(0, data.length - 1));
    const removed = await cache.remove(ref.ownerCallSid, 'purge');
    assert.deepEqual(await body, data);
    assert.equal(removed, data.length);
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes(ref.ownerCallSid) && !n.endsWith('.lock')),
      [],
    );
    assert.deepEqual(await cache.state(ref), { state: 'absent' });
    const removedEvents = named('recording_removed');
    assert.deepEqual(removedEvents.at(-1), {
      reason: 'purge',
      size: data.length,
      callSid: ref.ownerCallSid,
      recordingSid: ref.recordingSid,
    });
    const again = await cache.open(ref);
    assert.equal(again.outcome, 'miss');
    assert.deepEqual(await readAll(again.createReadStream(0, data.length - 1)), data);
    assert.equal(upstream.calls.length, 2);
  });

  it('remove gives up with RECGATE_LOCK_TIMEOUT while another process holds the lock', async (t) => {
    const dir = tempDir(t);
    const { cache } = makeCache(t, dir, new FakeUpstream({ data: audioBytes(1000) }), { lockTimeoutMs: 100 });
    const ref = newRef();
    const other = new FsLocker({ dir }).newLock(ref.ownerCallSid);
    assert.equal(await other.tryLock(), true);
    t.after(() => other.unlock());
    await assert.rejects(cache.remove(ref.ownerCallSid, 'purge'), isCode('RECGATE_LOCK_TIMEOUT'));
  });

  it('sweep removes only old partials nobody holds', async (t) => {
    const dir = tempDir(t);
    const store = new FsRecordingStore({ dir });
    const { cache } = makeCache(t, dir, new FakeUpstream({ data: Buffer.alloc(10) }), {
      sweepMaxAgeMs: 60_000,
    });
    const make = async () => {
      const ref = newRef();
      const w = await store.beginPartial(ref.ownerCallSid, {
        recordingSid: ref.recordingSid,
        size: 10,
        etag: null,
        lastModified: null,
        acceptsRanges: true,
        startedAt: new Date().toISOString(),
      });
      await w.append(Buffer.alloc(3));
      await w.close();
      return ref;
    };
    const age = (ref: RecordingRef) => {
      const old = new Date(Date.now() - 3_600_000);
      for (const name of ownFiles(dir, ref)) utimesSync(join(dir, name), old, old);
    };
    const abandoned = await make();
    age(abandoned);
    const fresh = await make();
    const held = await make();
    age(held);
    const holder = new FsLocker({ dir }).newLock(held.ownerCallSid);
    assert.equal(await holder.tryLock(), true);
    writeFileSync(join(dir, `.CA${'f'.repeat(32)}.lock`), '');
    // A write probe and a sidecar half-written by a process that died a minute ago.
    const probe = join(dir, '.recgate-write-check-1-abcd');
    const aside = join(dir, `.${fresh.ownerCallSid}.mp3.meta.tmp-0a1b2c3d4e5f`);
    for (const path of [probe, aside]) {
      writeFileSync(path, '');
      utimesSync(path, new Date(Date.now() - 120_000), new Date(Date.now() - 120_000));
    }
    const result = await cache.sweep();
    assert.deepEqual(result, { partials: 1, locks: 1, temporary: 2 });
    assert.deepEqual(ownFiles(dir, abandoned), []);
    assert.equal(ownFiles(dir, fresh).length, 3, 'a young current generation stays for a resume');
    assert.equal(ownFiles(dir, held).length, 4, 'a held one stays, with its lock file');
    await holder.unlock();
    assert.deepEqual(await cache.sweep({ maxAgeMs: 0 }), { partials: 2, locks: 0, temporary: 0 });
    assert.deepEqual(leftovers(dir), []);
  });
});
