/**
 * Bounded disk (src/recordings/eviction.ts) on a real cache, store, lock and SQLite index: the limit holds
 * under a burst, a hot recording survives churn, a file being served is served whole, a held download lock
 * protects its file, max-age, min-free and percentages of the volume on a small tmpfs, and filling an
 * empty index after an upgrade.
 * Two caches sharing one PostgreSQL are in eviction-postgres.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { parseSize, type SizeSetting } from '../../src/config/units.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { SqliteCacheIndex } from '../../src/recordings/cache-index/sqlite.js';
import { type EvictionReason, Evictor } from '../../src/recordings/eviction.js';
import { createRecordingCache, FsLocker } from '../../src/recordings/index.js';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import type { RecordingSid } from '../../src/sid.js';
import type { MediaRequest, Upstream } from '../../src/upstream/upstream.js';
import { captureLogs } from '../helpers/log-capture.js';
import { mountTmpfs } from '../helpers/read-only-mount.js';
import { audioBytes, FakeUpstream, newRef, readAll, tempDir } from './helpers.js';

/** An upstream with distinct bytes per recording, counting fetches per recording. */
class Recordings implements Pick<Upstream, 'fetchMedia'> {
  readonly #by = new Map<string, FakeUpstream>();
  readonly fetches = new Map<string, number>();

  add(size: number): { ref: RecordingRef; data: Buffer } {
    const ref = newRef();
    const data = audioBytes(size);
    this.#by.set(ref.recordingSid, new FakeUpstream({ data, chunkSize: 64 * 1024 }));
    return { ref, data };
  }

  fetchMedia(sid: RecordingSid, req?: MediaRequest) {
    this.fetches.set(sid, (this.fetches.get(sid) ?? 0) + 1);
    return this.#by.get(sid)!.fetchMedia(sid, req);
  }
}

interface Limits {
  maxBytes?: SizeSetting;
  minFree?: SizeSetting;
  maxAgeMs?: number;
}

/** A cache with an evictor on a fresh SQLite call log, as startGateway wires them. */
async function bounded(t: TestContext, limits: Limits, options: { dir?: string; now?: () => number } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'recgate-test-'));
  const dir = options.dir ?? join(root, 'recordings');
  const dbPath = join(root, 'recgate.db');
  const log = new SqliteCallLog(dbPath);
  await log.migrate();
  await log.close();
  const index = new SqliteCacheIndex(dbPath);
  const store = new FsRecordingStore({ dir });
  const locker = new FsLocker({ dir, pollIntervalMs: 5 });
  const { logger, records: lines } = captureLogs({ plain: true });
  const evicted: Array<{ reason: EvictionReason; bytes: number }> = [];
  const evictor = new Evictor({
    index,
    store,
    locker,
    logger,
    limits,
    touchIntervalMs: 60_000,
    checkIntervalMs: 60_000,
    onEvicted: (reason, bytes) => evicted.push({ reason, bytes }),
    ...(options.now ? { now: options.now } : {}),
  });
  const upstream = new Recordings();
  // Readers get every byte before the download commits; `play` waits for the commit it caused.
  const saved = new Map<string, () => void>();
  const cache = createRecordingCache({
    dir,
    upstream,
    store,
    locker,
    logger,
    pollIntervalMs: 5,
    onEvent: (e) => {
      evictor.observe(e);
      if (e.event === 'recording_saved') saved.get(e.callSid)?.();
    },
  });
  await evictor.start();
  // Closed once, by the test or after it; either way before the directories go (after-hooks run in
  // the order they were added, so a temporary directory made first would otherwise be removed first).
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      await evictor.close();
      await cache.close();
      await index.close();
      rmSync(root, { recursive: true, force: true });
    })();
    return closing;
  };
  t.after(close);
  const play = async (ref: RecordingRef): Promise<Buffer> => {
    const committed = new Promise<void>((resolve) => saved.set(ref.ownerCallSid, resolve));
    const rec = await cache.open(ref);
    const body = await readAll(rec.createReadStream(0, rec.size - 1));
    if (rec.outcome !== 'hit') await committed;
    saved.delete(ref.ownerCallSid);
    return body;
  };
  const onDisk = () => readdirSync(dir).filter((n) => n.endsWith('.mp3'));
  return { dir, index, store, locker, evictor, cache, upstream, play, onDisk, evicted, lines, close };
}

const SIZE = 40 * 417;

describe('bounded disk', () => {
  it('holds --cache-max-bytes under a burst of 30 distinct recordings over a limit of 10', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: 10 * SIZE } });
    const recs = Array.from({ length: 30 }, () => b.upstream.add(SIZE));
    // Six at a time: downloads and evictions interleave.
    for (let i = 0; i < recs.length; i += 6) {
      const group = recs.slice(i, i + 6);
      const bodies = await Promise.all(group.map(({ ref }) => b.play(ref)));
      for (const [j, body] of bodies.entries()) assert.ok(body.equals(group[j]!.data), 'served whole');
      await b.evictor.settle();
      assert.ok(b.onDisk().length <= 10, `${b.onDisk().length} files on disk after ${i + 6}`);
    }
    const totals = await b.index.totals();
    assert.ok(totals.bytes <= 10 * SIZE, `${totals.bytes} bytes indexed`);
    assert.equal(totals.files, b.onDisk().length, 'the index is in step with the directory');
    assert.equal(b.evicted.length, 30 - totals.files);
    assert.ok(b.evicted.every((e) => e.reason === 'max_bytes' && e.bytes === SIZE));
    // The most recent recordings are the ones kept.
    const kept = new Set(b.onDisk());
    for (const { ref } of recs.slice(-6)) assert.ok(kept.has(`${ref.ownerCallSid}.mp3`));
  });

  it('keeps a hot recording through churn, and evicts the least recently played', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: 5 * SIZE } });
    const hot = b.upstream.add(SIZE);
    await b.play(hot.ref);
    for (let i = 0; i < 20; i++) {
      const cold = b.upstream.add(SIZE);
      assert.ok((await b.play(cold.ref)).equals(cold.data));
      assert.ok((await b.play(hot.ref)).equals(hot.data));
      // Plays reach the index in batches; half the time the pass sees only the in-memory play.
      if (i % 2 === 0) await b.evictor.flush();
      await b.evictor.settle();
    }
    assert.ok(b.onDisk().includes(`${hot.ref.ownerCallSid}.mp3`), 'the hot recording is still cached');
    assert.equal(b.upstream.fetches.get(hot.ref.recordingSid), 1, 'fetched once');
    assert.ok(b.onDisk().length <= 5);
    assert.equal(b.evicted.length, 21 - b.onDisk().length);
  });

  it('serves a file evicted while it is read, whole and correct, and a later open downloads it again', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: 2 * SIZE } });
    const a = b.upstream.add(SIZE);
    await b.play(a.ref);
    await b.evictor.settle();
    // Found (a hit) and streaming when the eviction comes.
    const streaming = await b.cache.open(a.ref);
    assert.equal(streaming.outcome, 'hit');
    const stream = streaming.createReadStream(0, SIZE - 1);
    const first: Buffer = await new Promise((resolve) => stream.once('data', resolve));
    stream.pause();
    // Found, but its stream not created yet, when the eviction comes.
    const found = await b.cache.open(a.ref);
    for (let i = 0; i < 3; i++) await b.play(b.upstream.add(SIZE).ref);
    await b.evictor.settle();
    assert.ok(!b.onDisk().includes(`${a.ref.ownerCallSid}.mp3`), 'evicted');
    stream.resume();
    const rest = await readAll(stream);
    assert.ok(Buffer.concat([first, rest]).equals(a.data), 'the stream open during eviction ends whole');
    const late = await readAll(found.createReadStream(0, SIZE - 1));
    assert.ok(late.equals(a.data), 'a request that found the file before its eviction reads all of it');
    const again = await b.cache.open(a.ref);
    assert.equal(again.outcome, 'miss', 'the next request downloads it again');
    assert.ok((await readAll(again.createReadStream(0, SIZE - 1))).equals(a.data));
    assert.equal(b.upstream.fetches.get(a.ref.recordingSid), 2);
  });

  it('random plays racing evictions: every body is whole and the right recording', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: 3 * SIZE } });
    const recs = Array.from({ length: 8 }, () => b.upstream.add(SIZE));
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ rec: fc.nat(recs.length - 1), evict: fc.boolean() }), {
          minLength: 10,
          maxLength: 30,
        }),
        async (steps) => {
          // Every step starts at once: plays of cached, evicted and downloading recordings, and passes.
          const bodies = await Promise.all(
            steps.map(async ({ rec, evict }) => {
              if (evict) void b.evictor.evict();
              const r = await b.cache.open(recs[rec]!.ref);
              return { rec, body: await readAll(r.createReadStream(0, r.size - 1)) };
            }),
          );
          for (const { rec, body } of bodies) assert.ok(body.equals(recs[rec]!.data), `recording ${rec}`);
          // Readers have every byte before their download commits; each commit then asks for a pass.
          for (let i = 0; i < 300 && b.onDisk().length > 3; i++) {
            await sleep(10);
            await b.evictor.settle();
          }
          assert.ok(b.onDisk().length <= 3, `${b.onDisk().length} on disk`);
        },
      ),
      { numRuns: 8, seed: 12 },
    );
  });

  it('never removes a file while its download lock is held; takes it once the lock is free', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: SIZE } });
    const a = b.upstream.add(SIZE);
    await b.play(a.ref);
    await b.evictor.settle();
    // As a download replacing it would: hold the recording's lock.
    const held = b.locker.newLock(a.ref.ownerCallSid);
    await held.lock(AbortSignal.timeout(5000));
    const c = b.upstream.add(SIZE);
    await b.play(c.ref);
    await b.evictor.settle();
    // The pass skipped the least recently played file (its lock is busy) and took the next one.
    assert.deepEqual(b.onDisk(), [`${a.ref.ownerCallSid}.mp3`]);
    const blocked = await b.evictor.evict();
    assert.deepEqual(blocked, { evicted: 0, bytes: 0, skipped: 0, ran: true }, 'at the limit: nothing to do');
    const d = b.upstream.add(SIZE);
    await b.play(d.ref);
    await b.evictor.settle();
    assert.deepEqual(b.onDisk(), [`${a.ref.ownerCallSid}.mp3`]);
    await held.unlock();
    const freed = await b.evictor.evict();
    assert.equal(freed.evicted, 0, 'at the limit again');
    const e = b.upstream.add(SIZE);
    await b.play(e.ref);
    await b.evictor.settle();
    assert.deepEqual(b.onDisk(), [`${e.ref.ownerCallSid}.mp3`], 'once free, the oldest goes first');
  });

  it('evicts recordings nobody played for --cache-max-age, and only those', async (t) => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const day = 86_400_000;
    const b = await bounded(t, { maxAgeMs: 30 * day }, { now: () => now });
    const recs = [b.upstream.add(SIZE), b.upstream.add(SIZE), b.upstream.add(SIZE)];
    for (const { ref } of recs) await b.play(ref);
    await b.evictor.settle();
    now += 20 * day;
    await b.play(recs[2]!.ref);
    now += 11 * day;
    const result = await b.evictor.evict();
    assert.equal(result.evicted, 2);
    assert.deepEqual(b.onDisk(), [`${recs[2]!.ref.ownerCallSid}.mp3`]);
    assert.deepEqual(
      b.evicted.map((e) => e.reason),
      ['max_age', 'max_age'],
    );
    now += 9 * day;
    assert.equal((await b.evictor.evict()).evicted, 0, 'played 20 days ago: kept');
    now += 10 * day + 1;
    assert.equal((await b.evictor.evict()).evicted, 1, 'played 30 days ago: evicted');
  });

  it('keeps --cache-min-free on a small volume', async (t) => {
    // Hooks run in the order they are registered: unmount, then remove the directory.
    const parent = mkdtempSync(join(tmpdir(), 'recgate-volume-'));
    const dir = join(parent, 'volume');
    if (!mountTmpfs(t, dir, { size: '2m' })) return;
    t.after(() => rmSync(parent, { recursive: true, force: true }));
    const minFree = 1024 * 1024;
    const size = 150 * 417;
    // The cache keeps finished files open: it is closed before the volume goes (here, not in a hook).
    const b = await bounded(t, { minFree: { bytes: minFree } }, { dir });
    try {
      for (let i = 0; i < 24; i++) {
        const r = b.upstream.add(size);
        assert.ok((await b.play(r.ref)).equals(r.data));
        await b.evictor.settle();
      }
      assert.ok(b.evicted.length > 0, 'evicted');
      assert.ok(b.evicted.every((e) => e.reason === 'min_free'));
    } finally {
      await b.evictor.close();
      await b.cache.close();
    }
    const fs = statfsSync(dir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    assert.ok(free >= minFree, `${free} bytes free`);
    assert.ok(free < minFree + 2 * size, `${free} bytes free: evicts only what it must`);
    assert.equal(b.onDisk().length + b.evicted.length, 24);
  });

  it('a download refused for lack of room asks for a pass at once', async (t) => {
    const b = await bounded(t, { maxBytes: { bytes: SIZE } });
    const recs = [b.upstream.add(SIZE), b.upstream.add(SIZE)];
    for (const { ref } of recs) await b.play(ref);
    await b.evictor.settle();
    assert.equal(b.onDisk().length, 1);
    // Rows the evictor did not see committed (another process's), over the limit, and no commit here.
    await b.index.record(recs[0]!.ref.ownerCallSid, SIZE, 1);
    const before = b.evicted.length;
    b.evictor.observe({
      event: 'download_failed',
      code: 'RECGATE_STORAGE_FULL',
      phase: 'download',
      err: new Error('no room'),
      callSid: newRef().ownerCallSid,
      recordingSid: newRef().recordingSid,
    });
    await b.evictor.settle();
    assert.equal(b.evicted.length, before, 'the stale row had no file: nothing to count');
    assert.deepEqual(await b.index.totals(), { files: 1, bytes: SIZE }, 'the pass ran and dropped the row');
  });

  it('--cache-max-bytes 10% is of the volume: on a 4 MiB tmpfs it keeps 10 recordings of 41,700 bytes', async (t) => {
    const parent = mkdtempSync(join(tmpdir(), 'recgate-volume-'));
    const dir = join(parent, 'volume');
    if (!mountTmpfs(t, dir, { size: '4m' })) return;
    t.after(() => rmSync(parent, { recursive: true, force: true }));
    const size = 100 * 417;
    const b = await bounded(t, { maxBytes: parseSize('10%', '--cache-max-bytes') }, { dir });
    try {
      const volume = (await b.store.volume())!;
      assert.equal(volume.totalBytes, 4 * 1024 * 1024, 'the cache is on the tmpfs');
      const limit = Math.floor(volume.totalBytes / 10);
      for (let i = 0; i < 16; i++) {
        const r = b.upstream.add(size);
        assert.ok((await b.play(r.ref)).equals(r.data));
        await b.evictor.settle();
      }
      const { bytes, files } = await b.index.totals();
      assert.ok(bytes <= limit, `${bytes} bytes kept, over 10% of the volume (${limit})`);
      assert.ok(bytes > limit - size, `${bytes} bytes kept: evicts only what it must under ${limit}`);
      assert.equal(files, 10);
      assert.equal(b.onDisk().length, 10);
      assert.equal(b.evicted.length, 6);
      assert.ok(b.evicted.every((e) => e.reason === 'max_bytes' && e.bytes === size));
    } finally {
      await b.evictor.close();
      await b.cache.close();
    }
  });

  it('--cache-min-free 50% is of the volume: on a 4 MiB tmpfs it keeps 2 MiB free', async (t) => {
    const parent = mkdtempSync(join(tmpdir(), 'recgate-volume-'));
    const dir = join(parent, 'volume');
    if (!mountTmpfs(t, dir, { size: '4m' })) return;
    t.after(() => rmSync(parent, { recursive: true, force: true }));
    const size = 150 * 417;
    const plays = 40;
    const b = await bounded(t, { minFree: parseSize('50%', '--cache-min-free') }, { dir });
    let total: number;
    try {
      total = (await b.store.volume())!.totalBytes;
      assert.equal(total, 4 * 1024 * 1024, 'the cache is on the tmpfs');
      // 40 recordings fit on the volume, and cross the 50% line.
      for (let i = 0; i < plays; i++) {
        const r = b.upstream.add(size);
        assert.ok((await b.play(r.ref)).equals(r.data));
        await b.evictor.settle();
      }
      assert.ok(b.evicted.length > 0, 'evicted');
      assert.ok(b.evicted.every((e) => e.reason === 'min_free'));
    } finally {
      await b.evictor.close();
      await b.cache.close();
    }
    const fs = statfsSync(dir);
    const free = Number(fs.bavail) * Number(fs.bsize);
    t.diagnostic(`${b.evicted.length} of ${plays} evicted; ${free} bytes free of ${total}`);
    assert.ok(free >= total / 2, `${free} bytes free of ${total}`);
    assert.ok(free < total / 2 + 2 * size, `${free} bytes free of ${total}: evicts only what it must`);
    assert.equal(b.onDisk().length + b.evicted.length, plays);
  });

  it('fills an empty index from the directory once, in the background, after an upgrade', async (t) => {
    const root = tempDir(t);
    const dir = join(root, 'recordings');
    const first = await bounded(t, {}, { dir });
    const recs = [first.upstream.add(SIZE), first.upstream.add(SIZE)];
    for (const { ref } of recs) await first.play(ref);
    await first.close();
    // A file from before the index existed: on disk, not indexed.
    writeFileSync(join(dir, 'CA00000000000000000000000000000001.mp3'), Buffer.alloc(123));
    const b = await bounded(t, { maxBytes: { bytes: 100 * SIZE } }, { dir });
    await b.evictor.settle();
    assert.deepEqual(await b.index.totals(), { files: 3, bytes: 2 * SIZE + 123 });
    assert.ok(b.lines.some((l) => l.event === 'cache_index_filled' && l.files === 3));
    assert.equal(await b.evictor.backfill(), 0, 'a filled index is not filled again');
    await b.close();
  });
});
