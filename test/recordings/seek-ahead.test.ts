/**
 * Seek-ahead: reads far beyond the download's frontier get their bytes from ranged upstream slices, kept
 * in the partial with a block map that other processes and a later holder reuse; bounded in bytes and
 * concurrency (upstream bytes at most 1.1× the file, counted by the emulator as the bench does); discarded
 * when the upstream ignores Range or a validator differs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DEFAULT_ACCOUNT_SID,
  DEFAULT_AUTH_TOKEN,
  type EmulatorOptions,
  startEmulator,
} from '../../src/emulator/index.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import {
  createRecordingCache,
  type RecordingCacheOptions,
  type SeekAheadOptions,
} from '../../src/recordings/index.js';
import { EARLY_TOKEN, granted, NO_EARLY_TOKEN, room, tally } from '../../src/recordings/slice-run.js';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import type { BlockMap, BlockRecord } from '../../src/recordings/store/store.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { TwilioClient } from '../../src/upstream/twilio-client.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import { captureLogs } from '../helpers/log-capture.js';
import {
  audioBytes,
  Child,
  FakeUpstream,
  makeCache as makeTestCache,
  newRef,
  readAll,
  settled,
  sha256,
  startMediaServer,
  tempDir,
} from './helpers.js';

type T = { after(fn: () => void | Promise<void>): void; diagnostic(message: string): void };

/** The suite's caches wait up to 10 s on a lock: its throttled downloads run longer than the default 5 s. */
const makeCache = (
  t: T,
  dir: string,
  upstream: Pick<Upstream, 'fetchMedia'>,
  extra: Partial<RecordingCacheOptions> = {},
) => makeTestCache(t, dir, upstream, { lockTimeoutMs: 10_000, ...extra });

/** Reads a range, noting when its first byte came (ms after `t0`). */
async function timedRead(stream: NodeJS.ReadableStream, t0: number, onFirst?: () => void) {
  const chunks: Buffer[] = [];
  let firstByteMs = -1;
  for await (const chunk of stream) {
    if (firstByteMs < 0) {
      firstByteMs = performance.now() - t0;
      onFirst?.();
    }
    chunks.push(chunk as Buffer);
  }
  return { body: Buffer.concat(chunks), firstByteMs, endMs: performance.now() - t0 };
}

const fullCalls = (u: FakeUpstream) => u.calls.filter((c) => c.start === undefined).length;
const sliceCalls = (u: FakeUpstream) => u.calls.filter((c) => c.start !== undefined).length;

/** Small blocks and a low assumed rate, so that small recordings show the behaviour. */
const SMALL: SeekAheadOptions = {
  blockBytes: 64 * 1024,
  minDistanceBytes: 64 * 1024,
  assumedBytesPerSecond: 100_000,
  maxSliceBytes: 256 * 1024,
};

describe('seek-ahead', () => {
  it('a far seek on a cold, throttled recording gets its bytes long before the download gets there', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(5_000_000);
    // 32 KiB every 32 ms: about 1 MB/s.
    const upstream = new FakeUpstream({ data, ttfbMs: 20, chunkSize: 32 * 1024, chunkDelayMs: 32 });
    const { cache, named } = makeCache(t, dir, upstream);
    const ref = newRef();
    const t0 = performance.now();
    const rec = await cache.open(ref);
    let frontierAtFirstByte = -1;
    const read = await timedRead(rec.createReadStream(4_900_000, data.length - 1), t0, () => {
      void cache.state(ref).then((s) => {
        if (s.state === 'downloading') frontierAtFirstByte = s.received;
      });
    });
    t.diagnostic(
      `first byte after ${read.firstByteMs.toFixed(0)} ms, range done after ${read.endMs.toFixed(0)} ms, frontier then ${frontierAtFirstByte}`,
    );
    assert.ok(read.body.equals(data.subarray(4_900_000)), 'every byte equals the source');
    assert.ok(read.firstByteMs < 1500, `first byte after ${read.firstByteMs} ms`);
    assert.ok(frontierAtFirstByte >= 0 && frontierAtFirstByte < 2_000_000, `frontier ${frontierAtFirstByte}`);
    await settled(dir, ref, 30_000);
    assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(data));
    assert.equal(fullCalls(upstream), 1, 'the full download ran exactly once');
    assert.equal(sliceCalls(upstream), 1);
    const slices = named('seek_ahead');
    assert.equal(slices.length, 1);
    assert.equal(slices[0]!.offset, 4_718_592, 'aligned to a 256 KiB block');
    assert.equal(slices[0]!.bytes, data.length - 4_718_592);
    assert.ok(upstream.bytesSent <= 1.1 * data.length, `upstream sent ${upstream.bytesSent} bytes`);
    // Later reads of the same recording come from disk.
    const again = await cache.open(ref);
    assert.equal(again.outcome, 'hit');
  });

  it('without Range at the upstream the same read is correct, from the download, with no slice', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1_000_000);
    const upstream = new FakeUpstream({ data, acceptsRanges: false, chunkSize: 32 * 1024, chunkDelayMs: 8 });
    const { cache, named } = makeCache(t, dir, upstream, { seekAhead: SMALL });
    const ref = newRef();
    const rec = await cache.open(ref);
    const body = await readAll(rec.createReadStream(900_000, data.length - 1));
    assert.ok(body.equals(data.subarray(900_000)));
    await settled(dir, ref, 30_000);
    assert.equal(upstream.calls.length, 1);
    assert.equal(named('seek_ahead').length, 0);
  });

  it('an upstream that advertises ranges but answers 200 ends seek-ahead for the recording at once', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1_000_000);
    const upstream = new FakeUpstream({ data, ignoreRange: true, chunkSize: 32 * 1024, chunkDelayMs: 8 });
    const { cache, named } = makeCache(t, dir, upstream, { seekAhead: SMALL });
    const ref = newRef();
    const rec = await cache.open(ref);
    const first = readAll(rec.createReadStream(900_000, data.length - 1));
    await sleep(50);
    const second = readAll(rec.createReadStream(700_000, 799_999));
    assert.ok((await first).equals(data.subarray(900_000)));
    assert.ok((await second).equals(data.subarray(700_000, 800_000)));
    await settled(dir, ref, 30_000);
    const discarded = named('seek_ahead_discarded');
    assert.equal(discarded.length, 1);
    assert.equal(discarded[0]!.reason, 'no_range');
    assert.equal(discarded[0]!.bytes, 0);
    assert.equal(named('seek_ahead').length, 0);
    assert.equal(upstream.calls.length, 2, 'one download and the one slice that found out');
    assert.ok(upstream.bytesSent <= 1.1 * data.length, `upstream sent ${upstream.bytesSent} bytes`);
  });

  it("a slice whose ETag differs from the download's is discarded; bytes come from the download", async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1_000_000);
    const upstream = new FakeUpstream({ data, rangeEtag: '"other"', chunkSize: 32 * 1024, chunkDelayMs: 8 });
    const { cache, named } = makeCache(t, dir, upstream, { seekAhead: SMALL });
    const ref = newRef();
    const rec = await cache.open(ref);
    const first = readAll(rec.createReadStream(900_000, data.length - 1));
    const discardedSeen = (async () => {
      while (named('seek_ahead_discarded').length === 0) await sleep(5);
    })();
    await discardedSeen;
    const meta = JSON.parse(readFileSync(join(dir, `.${ref.ownerCallSid}.mp3.meta`), 'utf8'));
    const blocks = readFileSync(join(dir, `.${ref.ownerCallSid}.mp3.${meta.fileId}.blocks`), 'utf8');
    assert.match(blocks, /"t":"off","reason":"validator_mismatch"/);
    const second = readAll(rec.createReadStream(600_000, 699_999));
    assert.ok((await first).equals(data.subarray(900_000)));
    assert.ok((await second).equals(data.subarray(600_000, 700_000)));
    await settled(dir, ref, 30_000);
    const discarded = named('seek_ahead_discarded');
    assert.equal(discarded.length, 1);
    assert.equal(discarded[0]!.reason, 'validator_mismatch');
    assert.equal(discarded[0]!.etag, '"other"');
    assert.equal(sliceCalls(upstream), 1, 'no slice after the mismatch');
    assert.equal(fullCalls(upstream), 1);
    assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(data));
  });

  it('caps: many far seeks fetch at most 10% of the recording, two slices at a time', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(4_000_000);
    const upstream = new FakeUpstream({ data, chunkSize: 32 * 1024, chunkDelayMs: 8 });
    const { cache, named } = makeCache(t, dir, upstream, { seekAhead: SMALL });
    const ref = newRef();
    const rec = await cache.open(ref);
    const reads = Array.from({ length: 40 }, (_, i) => {
      const start = 1_000_000 + i * 73_000;
      const end = Math.min(data.length - 1, start + 100_000);
      return readAll(rec.createReadStream(start, end)).then((body) => {
        assert.ok(body.equals(data.subarray(start, end + 1)), `bytes ${start}-${end}`);
      });
    });
    await Promise.all(reads);
    await settled(dir, ref, 30_000);
    const sliceBytes = named('seek_ahead').reduce((sum, e) => sum + (e.bytes as number), 0);
    t.diagnostic(`${named('seek_ahead').length} slices, ${sliceBytes} bytes, upstream ${upstream.bytesSent}`);
    assert.ok(named('seek_ahead').length >= 1, 'some seeks were served by slices');
    assert.ok(sliceBytes <= 0.1 * data.length, `slices fetched ${sliceBytes} bytes`);
    assert.ok(upstream.bytesSent <= 1.1 * data.length, `upstream sent ${upstream.bytesSent} bytes`);
    assert.ok(upstream.maxActiveRanged <= 2, `${upstream.maxActiveRanged} slices at once`);
    assert.equal(fullCalls(upstream), 1);
  });

  it('caps: slices of all recordings of a process are bounded together', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(3_000_000);
    const upstream = new FakeUpstream({ data, chunkSize: 16 * 1024, chunkDelayMs: 10 });
    const { cache, named } = makeCache(t, dir, upstream, {
      seekAhead: { ...SMALL, maxConcurrentPerRecording: 2, maxConcurrentPerProcess: 2 },
    });
    const refs = [newRef(), newRef(), newRef()];
    const reads = await Promise.all(
      refs.map(async (ref) => {
        const rec = await cache.open(ref);
        return [0, 1].map((i) => {
          const start = 1_500_000 + i * 700_000;
          return readAll(rec.createReadStream(start, start + 50_000)).then((body) =>
            assert.ok(body.equals(data.subarray(start, start + 50_001))),
          );
        });
      }),
    );
    await Promise.all(reads.flat());
    t.diagnostic(`${named('seek_ahead').length} slices, at most ${upstream.maxActiveRanged} at once`);
    assert.ok(named('seek_ahead').length >= 2);
    assert.ok(upstream.maxActiveRanged <= 2, `${upstream.maxActiveRanged} slices at once`);
    await Promise.all(refs.map((ref) => settled(dir, ref)));
  });

  it('a slice fetched in one worker process is read by another from disk, with no new upstream request', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(2_000_000);
    // 16 KiB every 16 ms: about 1 MB/s, 2 s for the whole body.
    const server = await startMediaServer({ data, chunkDelayMs: 16 });
    t.after(() => server.close());
    const ref = newRef();
    const { cache, named } = makeCache(
      t,
      dir,
      {
        fetchMedia: (sid, req) =>
          import('./helpers.js').then(({ httpUpstream }) => httpUpstream(server.url).fetchMedia(sid, req)),
      },
      { seekAhead: SMALL },
    );
    // The child starts (which can take seconds on a loaded machine) before the download does.
    const child = new Child('cache-child.ts', {
      dir,
      ref,
      reads: 1,
      ranges: [[1_800_000, 1_899_999]],
      seekAhead: SMALL,
      upstream: { kind: 'http', url: server.url },
    });
    t.after(() => child.kill());
    await child.next('ready');
    const rec = await cache.open(ref);
    assert.equal(rec.outcome, 'miss');
    child.send({ cmd: 'go' });
    const done = await child.next('done');
    const [result] = done.results as Array<{ sha256: string; outcome: string }>;
    assert.equal(result!.sha256, sha256(data.subarray(1_800_000, 1_900_000)));
    assert.equal(result!.outcome, 'wait');
    // The read ends once its bytes are on disk; the slice's event follows when its body is done.
    const childSlices = () => child.messages.filter((m) => m.type === 'event' && m.name === 'seek_ahead');
    const deadline = Date.now() + 10_000;
    while (childSlices().length === 0 && Date.now() < deadline) await sleep(10);
    assert.equal(childSlices().length, 1, 'the child fetched one slice');
    assert.equal(server.ranges.length, 2);
    const before = (await cache.state(ref)) as { received: number };
    const body = await readAll(rec.createReadStream(1_800_000, 1_899_999));
    const after = (await cache.state(ref)) as { state: string; received?: number };
    assert.ok(body.equals(data.subarray(1_800_000, 1_900_000)));
    assert.equal(after.state, 'downloading', 'read before the download got there');
    assert.ok((after.received ?? 0) < 1_800_000, `frontier ${before.received} .. ${after.received}`);
    assert.equal(server.ranges.length, 2, 'no new upstream request');
    assert.equal(named('seek_ahead').length, 0);
    await settled(dir, ref, 30_000);
    assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(data));
    child.send({ cmd: 'exit' });
    await child.exited;
  });

  it('takeover with a block map: resumes at the published frontier, reuses slices, never trusts other bytes', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(2_000_000);
    const store = new FsRecordingStore({ dir });
    const ref = newRef();
    const id = ref.ownerCallSid;
    const meta = {
      recordingSid: ref.recordingSid,
      size: data.length,
      etag: '"up-1"',
      lastModified: 'Tue, 01 Apr 2025 10:00:00 GMT',
      acceptsRanges: true,
      startedAt: new Date().toISOString(),
    };
    const dead = await store.beginPartial(id, meta);
    await dead.append(data.subarray(0, 100_000));
    const slice = await store.openSlice(id, dead.fileId);
    assert.ok(slice);
    await slice.write(data.subarray(1_000_000, 1_200_000), 1_000_000);
    // Bytes beyond the frontier that no block-map record vouches for (a slice cut off before recording).
    await slice.write(Buffer.alloc(50_000, 0xee), 500_000);
    await slice.close();
    const header = {
      fileId: dead.fileId,
      size: data.length,
      etag: meta.etag,
      lastModified: meta.lastModified,
    };
    assert.equal(
      await store.appendBlockMap(id, header, [
        { t: 'claim', token: 'dead', start: 1_000_000, end: 1_200_000 },
        { t: 'have', start: 1_000_000, end: 1_200_000 },
      ]),
      true,
    );
    assert.equal(
      await store.appendBlockMap(id, { ...header, fileId: '0123456789abcdef' }, [
        { t: 'have', start: 0, end: 1 },
      ]),
      false,
      'a map belongs to one generation',
    );
    await dead.close();

    // 16 KiB every 16 ms from byte 100 000: the download needs about 0.9 s to reach byte 1 000 000.
    const upstream = new FakeUpstream({ data, chunkSize: 16 * 1024, chunkDelayMs: 16 });
    const { cache, capture } = makeCache(t, dir, upstream);
    const rec = await cache.open(ref);
    const t0 = performance.now();
    const fromSlice = await timedRead(rec.createReadStream(1_050_000, 1_149_999), t0);
    const state = (await cache.state(ref)) as { received: number };
    t.diagnostic(`slice range read in ${fromSlice.endMs.toFixed(0)} ms at frontier ${state.received}`);
    assert.ok(fromSlice.body.equals(data.subarray(1_050_000, 1_150_000)));
    assert.ok(
      state.received < 1_000_000,
      `read from the map before the download got there (${state.received})`,
    );
    const untrusted = await readAll(rec.createReadStream(500_000, 549_999));
    assert.ok(untrusted.equals(data.subarray(500_000, 550_000)), 'unrecorded bytes came from the download');
    await settled(dir, ref, 30_000);
    assert.equal(upstream.calls.length, 1);
    assert.equal(upstream.calls[0]!.start, 100_000, 'resumed at the published frontier');
    assert.ok(capture.events().includes('download_resumed'));
    assert.ok(readFileSync(join(dir, `${id}.mp3`)).equals(data));
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes('.blocks')),
      [],
      'the block maps go with the partials',
    );
  });

  it('budget: the early claim is always granted and counted; regular claims keep a block for it until it shows', () => {
    const header = { fileId: 'f', size: 1000, etag: '"e"', lastModified: null };
    const claim = (token: string, start: number, end: number): BlockRecord => ({
      t: 'claim',
      token,
      start,
      end,
    });
    const map = (...records: BlockRecord[]): BlockMap => ({ header, records });
    const budget = { total: 100, reserve: 64 };
    // Early first (as the downloading process makes it): regular claims get the budget less its bytes.
    const first = map(claim(`${EARLY_TOKEN}a`, 900, 960), claim('b', 100, 140), claim('c', 200, 201));
    assert.equal(granted(first, `${EARLY_TOKEN}a`, budget), true);
    assert.equal(granted(first, 'b', budget), true);
    assert.equal(granted(first, 'c', budget), false, '60 + 40 + 1 > 100');
    assert.deepEqual(tally(first.records, budget), { regular: 40, early: 60 });
    // Before the early claim shows, regular claims share total − reserve; the early one, late, still fits.
    const late = map(claim('b', 100, 130), claim('c', 200, 210), claim(`${EARLY_TOKEN}a`, 900, 964));
    assert.equal(granted(late, 'b', budget), true);
    assert.equal(granted(late, 'c', budget), false, '30 + 10 > 100 − 64');
    assert.equal(granted(late, `${EARLY_TOKEN}a`, budget), true);
    assert.deepEqual(tally(late.records, budget), { regular: 30, early: 64 });
    assert.equal(granted(late, 'missing', budget), false);
    // "No early slice" frees the reserve.
    const none = map(claim(NO_EARLY_TOKEN, 0, 1), claim('b', 100, 199), claim('c', 200, 201));
    assert.equal(granted(none, 'b', budget), true);
    assert.equal(granted(none, 'c', budget), false);
    assert.equal(room({ regular: 10, early: undefined }, budget), 26);
    assert.equal(room({ regular: 10, early: 0 }, budget), 90);
    assert.equal(room({ regular: 90, early: 30 }, budget), 0);
  });

  it('validates its options, naming the bad field', (t) => {
    const dir = tempDir(t);
    const upstream = new FakeUpstream({ data: Buffer.alloc(1) });
    const { logger } = captureLogs({ plain: true });
    assert.throws(
      () => createRecordingCache({ dir, upstream, logger, seekAhead: { blockBytes: 0 } }),
      /options\.seekAhead\.blockBytes/,
    );
    assert.throws(
      () => createRecordingCache({ dir, upstream, logger, seekAhead: { maxFraction: 2 } }),
      /options\.seekAhead\.maxFraction/,
    );
    assert.throws(
      () =>
        createRecordingCache({ dir, upstream, logger, seekAhead: { blockBytes: 1024, maxSliceBytes: 512 } }),
      /options\.seekAhead\.maxSliceBytes/,
    );
  });
});

/** An emulator on port 0 with a TwilioClient on it, both closed after the test. */
async function emulatorClient(t: T, options: Omit<EmulatorOptions, 'port'>) {
  const emulator = await startEmulator({ port: 0, ...options });
  t.after(() => emulator.close());
  const client = new TwilioClient({
    baseUrl: emulator.url,
    accountSid: DEFAULT_ACCOUNT_SID,
    authToken: DEFAULT_AUTH_TOKEN,
  });
  t.after(() => client.close());
  return { emulator, client };
}

describe('seek-ahead end to end (emulator + TwilioClient)', () => {
  it('cold seek to the last 100 KB of a 30 MB recording at 300 ms TTFB and 4 MB/s', async (t) => {
    const { emulator, client } = await emulatorClient(t, { ttfbMs: 300, bandwidth: 4_000_000 });
    const dir = tempDir(t);
    const { cache, named } = makeCache(t, dir, client);
    // Two cold recordings side by side: one whose open() is told where the read starts, one that is not.
    const created = await Promise.all([
      emulator.createRecording({ bytes: 30_000_000 }),
      emulator.createRecording({ bytes: 30_000_000 }),
    ]);
    const runs = created.map(async (c, i) => {
      const ref: RecordingRef = {
        ownerCallSid: c.recording_call_sid as CallSid,
        recordingSid: c.recording_sid as RecordingSid,
      };
      const start = c.size - 100_000;
      const t0 = performance.now();
      const rec = await cache.open(ref, i === 0 ? { readStart: start } : {});
      const read = await timedRead(rec.createReadStream(start, c.size - 1), t0);
      await settled(dir, ref, 30_000);
      return { c, ref, start, read, downloadMs: performance.now() - t0 };
    });
    const results = await Promise.all(runs);
    for (const { c, ref, start, read, downloadMs } of results) {
      const onDisk = readFileSync(join(dir, `${ref.ownerCallSid}.mp3`));
      assert.equal(sha256(onDisk), c.sha256);
      assert.ok(read.body.equals(onDisk.subarray(start)), 'every byte equals the source');
      const stats = emulator.stats();
      const bytes = stats.media_bytes[String(c.recording_sid)] ?? 0;
      t.diagnostic(
        `${c === results[0]!.c ? 'with readStart' : 'createReadStream only'}: first byte after ${read.firstByteMs.toFixed(0)} ms (upstream TTFB 300 ms), upstream bytes ${bytes} = ${(bytes / c.size).toFixed(3)} x size, requests ${stats.media_requests[String(c.recording_sid)]}`,
      );
      // Timing belongs to the bench (npm run bench:seek); here only the order: the far bytes came from the
      // slice, long before the download reached them (not a fixed time, which a loaded machine stretches).
      assert.ok(
        read.firstByteMs < downloadMs / 2,
        `first byte after ${read.firstByteMs} ms, the whole download ${downloadMs} ms`,
      );
      assert.ok(bytes <= 1.1 * c.size, `upstream sent ${bytes} bytes`);
      assert.equal(stats.media_requests[String(c.recording_sid)], 2, 'one download and one slice');
    }
    assert.equal(named('cache_miss').length, 2);
    assert.equal(named('seek_ahead').length, 2);
  });

  it('with Range off at the emulator the same read is correct, just later', async (t) => {
    const { emulator, client } = await emulatorClient(t, {
      ttfbMs: 300,
      bandwidth: 4_000_000,
      rangeSupport: false,
    });
    const dir = tempDir(t);
    const { cache, named } = makeCache(t, dir, client);
    const c = await emulator.createRecording({ bytes: 8_000_000 });
    const ref: RecordingRef = {
      ownerCallSid: c.recording_call_sid as CallSid,
      recordingSid: c.recording_sid as RecordingSid,
    };
    const start = c.size - 100_000;
    const t0 = performance.now();
    const rec = await cache.open(ref, { readStart: start });
    const read = await timedRead(rec.createReadStream(start, c.size - 1), t0);
    await settled(dir, ref, 30_000);
    const onDisk = readFileSync(join(dir, `${ref.ownerCallSid}.mp3`));
    assert.equal(sha256(onDisk), c.sha256);
    assert.ok(read.body.equals(onDisk.subarray(start)));
    const bytes = emulator.stats().media_bytes[String(c.recording_sid)] ?? 0;
    t.diagnostic(
      `first byte after ${read.firstByteMs.toFixed(0)} ms, upstream bytes ${(bytes / c.size).toFixed(3)} x size`,
    );
    assert.ok(read.firstByteMs > 1000, 'waited for the download');
    assert.ok(bytes <= 1.1 * c.size, `upstream sent ${bytes} bytes`);
    // The early slice went out with the download, learned the upstream ignores Range, and ended seek-ahead.
    assert.equal(named('seek_ahead_discarded')[0]?.reason, 'no_range');
    assert.equal(named('seek_ahead').length, 0);
  });

  it('upstream bytes stay within 1.1× the file in a mixed cold stampede: full reads, windows everywhere, suffixes', async (t) => {
    const { emulator, client } = await emulatorClient(t, { ttfbMs: 100, bandwidth: 1_000_000 });
    const dir = tempDir(t);
    // The defaults scaled down with the file (a 5 MB file at 4 MB/s in the bench): slices within 10% of it,
    // blocks of 64 KiB, and far seeks (early slices included) from 200 kB on.
    const { cache, named } = makeCache(t, dir, client, {
      lockTimeoutMs: 10_000,
      seekAhead: {
        blockBytes: 64 * 1024,
        minDistanceBytes: 64 * 1024,
        assumedBytesPerSecond: 200_000,
        maxSliceBytes: 256 * 1024,
      },
    });
    const c = await emulator.createRecording({ bytes: 1_250_000 });
    const ref: RecordingRef = {
      ownerCallSid: c.recording_call_sid as CallSid,
      recordingSid: c.recording_sid as RecordingSid,
    };
    const size = c.size;
    const window = 16_384;
    const reads: Array<{ start: number; end: number; hint: boolean }> = [];
    for (let i = 0; i < 8; i++) reads.push({ start: 0, end: size - 1, hint: i % 2 === 0 });
    // Windows spread over the whole file, the far ones each a candidate for a slice.
    for (let i = 0; i < 24; i++) {
      const start = Math.floor(((i * 7919) % 24) * ((size - window) / 23));
      reads.push({ start, end: start + window - 1, hint: true });
    }
    for (let i = 0; i < 8; i++) reads.push({ start: size - window, end: size - 1, hint: true });
    const bodies = await Promise.all(
      reads.map(async ({ start, end, hint }) => {
        const rec = await cache.open(ref, hint ? { readStart: start } : {});
        return { start, end, body: await readAll(rec.createReadStream(start, end)) };
      }),
    );
    await settled(dir, ref, 30_000);
    const onDisk = readFileSync(join(dir, `${ref.ownerCallSid}.mp3`));
    assert.equal(sha256(onDisk), c.sha256);
    for (const { start, end, body } of bodies) {
      assert.ok(body.equals(onDisk.subarray(start, end + 1)), `bytes ${start}-${end}`);
    }
    const stats = emulator.stats();
    const bytes = stats.media_bytes[String(c.recording_sid)] ?? 0;
    t.diagnostic(
      `upstream ${bytes} bytes = ${(bytes / size).toFixed(3)}× the file, ${stats.media_requests[String(c.recording_sid)]} requests, ${named('seek_ahead').length} slices used, ${named('seek_ahead_discarded').length} discarded`,
    );
    assert.ok(bytes <= 1.1 * size, `upstream sent ${bytes} bytes for a ${size}-byte file`);
    assert.equal(named('cache_miss').length, 1, 'one download');
  });
});
