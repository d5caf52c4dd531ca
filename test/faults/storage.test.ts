/**
 * Storage faults under a running gateway: the recordings volume fills up (before a download starts, and
 * while one runs), turns read-only, or is deleted. Each case checks what the client gets (a clean JSON error
 * before any header, or a stream that is cut, never one that ends complete-and-wrong), that no partial is
 * left behind, that cached recordings keep playing, and that the same request works once the volume is
 * back. The volumes are small tmpfs mounts (as root; skipped with the reason elsewhere, failing in CI).
 *
 *   npm run test:faults -- --only storage --repeat 20 --seed 7
 */
import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { generateMp3 } from '../../src/emulator/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { mountTmpfs, remount, unmount } from '../helpers/read-only-mount.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { sha256 } from '../recordings/helpers.js';
import { between, faultRepeat, faultSeed, seededRandom } from './seed.js';

const REPEAT = faultRepeat(1);
const SEED = faultSeed();
const BUSINESS = 'acme';
/** The recordings volume of the disk-full cases. */
const VOLUME = '4m';

interface Recording {
  callSid: CallSid;
  recordingSid: RecordingSid;
  size: number;
  sha256: string;
}

interface Download {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The error that ended the body early (a cut stream), if any. */
  cut: unknown;
}

/** A gateway whose recordings directory is a volume of its own, for one repetition. */
class Volume {
  readonly stack: Stack;
  readonly dir: string;
  readonly #token: string;

  constructor(stack: Stack, token: string) {
    this.stack = stack;
    this.dir = join(stack.dataDir, 'recordings');
    this.#token = token;
  }

  async newRecording(bytes: number): Promise<Recording> {
    const created = await this.stack.emulator.createRecording({ bytes });
    const rec: Recording = {
      callSid: created.call_sid as CallSid,
      recordingSid: created.recording_sid as RecordingSid,
      size: created.size,
      sha256: created.sha256!,
    };
    await this.stack.register({ businessId: BUSINESS, callSid: rec.callSid, recordingSid: rec.recordingSid });
    return rec;
  }

  /** Starts a download; the body is read by {@link readBody}. */
  start(rec: Recording) {
    return request(`${this.stack.url}/api/calls/${rec.callSid}/download`, {
      headers: { authorization: `Bearer ${this.#token}` },
    });
  }

  async download(rec: Recording): Promise<Download> {
    return readBody(await this.start(rec));
  }

  async get(path: string): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await request(`${this.stack.url}${path}`);
    return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
  }

  mediaRequests(rec: Recording): number {
    return this.stack.emulator.stats().media_requests[rec.recordingSid] ?? 0;
  }

  /** The files of a recording in the recordings directory (none when the directory is gone). */
  files(rec: Recording): string[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((name) => name.includes(rec.callSid))
      .sort();
  }

  /** Plays from start to end, byte for byte. */
  async assertPlays(rec: Recording): Promise<void> {
    assertWhole(await this.download(rec), rec);
  }

  /** Committed and alone: the file and its identity record naming the recording, nothing else of it. */
  async assertCommitted(rec: Recording): Promise<void> {
    const finished = [`.${rec.callSid}.mp3.id`, `${rec.callSid}.mp3`].join(' ');
    await waitFor(
      () => this.files(rec).join(' ') === finished,
      () => `not settled: ${this.files(rec).join(', ')}`,
    );
    const identity = JSON.parse(readFileSync(join(this.dir, `.${rec.callSid}.mp3.id`), 'utf8'));
    assert.equal(identity.recordingSid, rec.recordingSid);
    assert.equal(sha256(readFileSync(join(this.dir, `${rec.callSid}.mp3`))), rec.sha256);
  }

  /** Nothing of the recording is left: no final file, generation, sidecar or lock file. */
  async assertNothingLeft(rec: Recording): Promise<void> {
    // The lock is released right after the client hears of the failure.
    await waitFor(
      () => this.files(rec).length === 0,
      () => `files left: ${this.files(rec).join(', ')}`,
    );
  }
}

describe('storage faults', () => {
  /**
   * Runs `body` REPEAT times, each with its own seeded random stream and a fresh gateway whose recordings
   * directory is a fresh tmpfs of `size` (or a plain directory without `size`); prints the choices.
   */
  async function repeat(
    t: TestContext,
    label: string,
    size: string | undefined,
    body: (volume: Volume, random: () => number, note: (s: string) => void) => Promise<void>,
  ): Promise<void> {
    t.diagnostic(`seed ${SEED}, repeat ${REPEAT}`);
    for (let i = 0; i < REPEAT; i++) {
      const dataDir = await mkdtemp(join(tmpdir(), 'recgate-storage-'));
      const dir = join(dataDir, 'recordings');
      let stack: Stack | undefined;
      try {
        if (size !== undefined && !mountTmpfs(t, dir, { size })) return;
        stack = await startStack({ dataDir });
        const volume = new Volume(stack, await stack.token(BUSINESS));
        await body(volume, seededRandom(SEED, `${label}#${i}`), (s) => t.diagnostic(`#${i}: ${s}`));
      } finally {
        // The gateway keeps finished files open: it goes first, then the volume, then the directory.
        await stack?.close();
        if (size !== undefined) unmount(dir);
        await rm(dataDir, { recursive: true, force: true });
      }
    }
  }

  it('disk full: a recording larger than the free space gets 507 before any header; cached ones keep playing', async (t) => {
    await repeat(t, 'disk full', VOLUME, async (volume, random, note) => {
      const cached = await volume.newRecording(between(random, 60_000, 200_000));
      await volume.assertPlays(cached);
      await volume.assertCommitted(cached);
      const { bavail, bsize } = statfsSync(volume.dir);
      const free = bavail * bsize;
      const big = await volume.newRecording(between(random, free + 1, free + 2_000_000));
      const res = await volume.download(big);
      assertFails(res, 507, 'RECGATE_STORAGE_FULL');
      // The size comes with the upstream's headers: one request, whose body is dropped at once.
      assert.equal(volume.mediaRequests(big), 1);
      await volume.assertNothingLeft(big);
      note(
        `cached ${cached.size} bytes; ${big.size} asked for with ${free} free: ${res.status}, ` +
          `${volume.stack.emulator.stats().media_bytes[big.recordingSid] ?? 0} upstream bytes sent`,
      );
      await volume.assertPlays(cached);
      assert.equal(volume.mediaRequests(cached), 1, 'played from disk');
      await volume.assertCommitted(cached);
    });
  });

  it('disk full mid-download: the stream is cut, the partial removed; once there is room it downloads', async (t) => {
    await repeat(t, 'disk full mid-download', VOLUME, async (volume, random, note) => {
      const cached = await volume.newRecording(between(random, 60_000, 200_000));
      await volume.assertPlays(cached);
      await volume.assertCommitted(cached);
      const rec = await volume.newRecording(between(random, 1_200_000, 2_000_000));
      const bandwidth = between(random, 300_000, 500_000);
      volume.stack.emulator.setThrottle({ bandwidth });
      let res: Download;
      let filler = 0;
      try {
        // The recording fits when it starts; once the client has its first bytes, the volume fills up.
        const pending = await volume.start(rec);
        assert.equal(pending.statusCode, 200);
        res = await readBody(pending, () => {
          filler = fill(join(volume.dir, 'filler'));
        });
      } finally {
        volume.stack.emulator.setThrottle({ bandwidth: 0 });
      }
      note(
        `cached ${cached.size}; ${rec.size} at ${bandwidth} B/s, ${filler} filler bytes written: ` +
          `client got ${res.body.length} bytes, ${res.cut === undefined ? 'ended' : 'cut'}`,
      );
      assert.ok(filler > 0, 'the filler took the free space');
      assert.equal(res.status, 200);
      assert.ok(res.cut !== undefined, 'the stream is cut, never ended short');
      assert.ok(res.body.length < rec.size);
      assert.ok(res.body.equals(mediaOf(rec).subarray(0, res.body.length)), 'what came was right');
      assert.equal(volume.mediaRequests(rec), 1, 'a full disk is not retried');
      await volume.assertNothingLeft(rec);
      await volume.assertPlays(cached);
      // Room again: the same recording downloads and is committed.
      rmSync(join(volume.dir, 'filler'));
      await volume.assertPlays(rec);
      await volume.assertCommitted(rec);
      assert.equal(volume.mediaRequests(rec), 2);
    });
  });

  it('read-only at run time: 500 RECGATE_STORAGE_ERROR, cached ones play, readyz 503; read-write again: all works', async (t) => {
    await repeat(t, 'read-only', VOLUME, async (volume, random, note) => {
      const cached = await volume.newRecording(between(random, 60_000, 200_000));
      await volume.assertPlays(cached);
      await volume.assertCommitted(cached);
      const cold = await volume.newRecording(between(random, 60_000, 400_000));
      await remount(volume.dir, 'ro');
      let remounted = false;
      try {
        const res = await volume.download(cold);
        assertFails(res, 500, 'RECGATE_STORAGE_ERROR');
        await volume.assertPlays(cached);
        const ready = await waitForReady(volume, 503);
        assert.deepEqual(ready.json, { status: 'not_ready', checks: { call_log: true, storage: false } });
        assert.equal((await volume.get('/healthz')).status, 200, 'the process is up');
        note(
          `cached ${cached.size}, cold ${cold.size}: ${volume.mediaRequests(cold)} media request(s) while read-only`,
        );
        await remount(volume.dir, 'rw');
        remounted = true;
      } finally {
        if (!remounted) await remount(volume.dir, 'rw');
      }
      const ready = await waitForReady(volume, 200);
      assert.deepEqual(ready.json, { status: 'ready', checks: { call_log: true, storage: true } });
      assert.ok(volume.mediaRequests(cold) <= 1, 'at most the headers of one exchange while read-only');
      await volume.assertPlays(cold);
      await volume.assertCommitted(cold);
      await volume.assertPlays(cached);
    });
  });

  it('directory deleted at run time: the next cold request recreates it, with its lock and partial, and succeeds', async (t) => {
    await repeat(t, 'deleted', undefined, async (volume, random, note) => {
      const cached = await volume.newRecording(between(random, 60_000, 200_000));
      await volume.assertPlays(cached);
      await volume.assertCommitted(cached);
      rmSync(volume.dir, { recursive: true, force: true });
      const cold = await volume.newRecording(between(random, 300_000, 600_000));
      // Paced, so that the download's files can be seen in the recreated directory while it runs.
      volume.stack.emulator.setThrottle({ bandwidth: 1_000_000 });
      let seen: string[] = [];
      try {
        const pending = await volume.start(cold);
        assert.equal(pending.statusCode, 200);
        await waitFor(
          () => {
            seen = volume.files(cold);
            return seen.includes(`.${cold.callSid}.lock`) && seen.some((n) => n.endsWith('.part'));
          },
          () => `the download's files are not in the recreated directory: ${volume.files(cold).join(', ')}`,
        );
        assertWhole(await readBody(pending), cold);
      } finally {
        volume.stack.emulator.setThrottle({ bandwidth: 0 });
      }
      note(`cached ${cached.size}, cold ${cold.size}; while it ran: ${seen.map(kind).join(', ')}`);
      await volume.assertCommitted(cold);
      assert.equal(volume.mediaRequests(cold), 1);
      // A recording cached before the deletion still plays (from the descriptor kept open; see final-files.ts).
      await volume.assertPlays(cached);
      assert.equal((await waitForReady(volume, 200)).status, 200);
    });
  });
});

/** Reads a response's body to its end, or to the error that cuts it; `onFirst` runs after the first chunk. */
async function readBody(res: Awaited<ReturnType<typeof request>>, onFirst?: () => void): Promise<Download> {
  const chunks: Buffer[] = [];
  let cut: unknown;
  try {
    for await (const chunk of res.body) {
      chunks.push(chunk as Buffer);
      if (chunks.length === 1) onFirst?.();
    }
  } catch (err) {
    cut = err;
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), cut };
}

function assertWhole(res: Download, rec: Recording): void {
  assert.equal(res.status, 200, res.body.subarray(0, 200).toString());
  assert.equal(res.cut, undefined, 'the body was not cut');
  assert.equal(res.headers['content-length'], String(rec.size));
  assert.equal(sha256(res.body), rec.sha256, 'the recording, byte for byte');
}

/** The README's error: status, JSON body with the code, no stack, nothing that looks like a recording. */
function assertFails(res: Download, status: number, code: string): void {
  assert.equal(res.status, status, res.body.subarray(0, 200).toString());
  assert.equal(res.cut, undefined);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  assert.equal(res.headers['content-range'], undefined);
  assert.equal(res.headers.etag, undefined);
  const body = JSON.parse(res.body.toString('utf8'));
  assert.equal(body.error.code, code);
  assert.doesNotMatch(
    res.body.toString('utf8'),
    /at .*\.(ts|js):\d+|EROFS|ENOSPC|\/tmp\//,
    'nothing internal',
  );
}

/** The recording's bytes, as the emulator generates them from its SID. */
function mediaOf(rec: Recording): Buffer {
  const data = generateMp3({ seed: rec.recordingSid, bytes: rec.size }).data;
  assert.equal(sha256(data), rec.sha256);
  return data;
}

/** Writes a file until the volume is full (ENOSPC); returns the bytes written. */
function fill(path: string): number {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(64 * 1024, 0x5a);
  let written = 0;
  try {
    for (;;) {
      try {
        written += writeSync(fd, block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return written;
        throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** What kind of file of a recording a name is: `lock`, `part`, `meta`, … */
function kind(name: string): string {
  return name.split('.').at(-1)!;
}

async function waitForReady(
  volume: Volume,
  status: number,
): Promise<{ status: number; json: Record<string, unknown> }> {
  let last = await volume.get('/readyz');
  // The storage probe's answer is reused for a couple of seconds.
  await waitFor(
    () => last.status === status,
    () => `readyz stayed ${last.status}: ${JSON.stringify(last.json)}`,
    async () => {
      last = await volume.get('/readyz');
    },
  );
  return last;
}

async function waitFor(
  done: () => boolean,
  what: () => string,
  poll: () => Promise<void> = async () => undefined,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(what());
    await sleep(20);
    await poll();
  }
}
