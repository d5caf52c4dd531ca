/**
 * Encrypted recordings in the recording cache (src/recordings/decrypt/media.ts as the cache's `mediaFor`):
 * an upstream serving Twilio-style ciphertext (AES-256-GCM, tag after the body) gives readers and the
 * stored file the plaintext, with one download for concurrent readers and seek-ahead slices decrypted on
 * their own; a flipped byte, a flipped tag and a body cut short without a length fail the flight and leave
 * nothing behind, and a later request downloads again; a body that breaks off is fetched again, whole; a
 * business without a key, or with the wrong one, gets RECGATE_RECORDING_ENCRYPTED before a byte is stored.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { encryptMedia } from '../../src/emulator/encryption.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { RecordingDecryption } from '../../src/recordings/decrypt/media.js';
import type { SeekAheadOptions } from '../../src/recordings/index.js';
import type { MediaRequest, Upstream } from '../../src/upstream/upstream.js';
import { isCode } from '../helpers/common.js';
import {
  audioBytes,
  encryptedResource,
  FakeUpstream,
  type FakeUpstreamOptions,
  makeCache,
  newRef,
  readAll,
  settled,
  tempDir,
} from './helpers.js';

type T = { after(fn: () => void | Promise<void>): void };

const owner = generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });

const SMALL: SeekAheadOptions = {
  blockBytes: 64 * 1024,
  minDistanceBytes: 64 * 1024,
  assumedBytesPerSecond: 100_000,
  maxSliceBytes: 256 * 1024,
};

/**
 * A cache whose upstream serves `plain` encrypted for `owner`'s public key; `acme` has `key` (default the
 * owner's private key). `swap` replaces the upstream's options (a later, healthy answer).
 */
function encryptedCache(
  t: T,
  plain: Buffer,
  options: Omit<FakeUpstreamOptions, 'data'> = {},
  key: KeyObject | null = owner.privateKey,
) {
  const dir = tempDir(t);
  const media = encryptMedia(plain, `CR${'1'.repeat(32)}`, owner.publicKey);
  const upstream = new FakeUpstream({ data: media.data, ...options });
  const lookups: string[] = [];
  const decryption = new RecordingDecryption({
    upstream,
    headFor: async () => upstream,
    lookup: async (sid) => {
      lookups.push(sid);
      return encryptedResource(sid, media.details);
    },
    keys: { get: (business) => (business === 'acme' ? (key ?? undefined) : undefined) },
  });
  const made = makeCache(t, dir, upstream as Pick<Upstream, 'fetchMedia'>, {
    lockTimeoutMs: 10_000,
    seekAhead: SMALL,
    mediaFor: (business) => decryption.forBusiness(business),
  });
  const full = () => upstream.calls.filter((c: MediaRequest) => c.start === undefined).length;
  const swap = (next: Omit<FakeUpstreamOptions, 'data'>) => {
    upstream.options = { data: media.data, ...next };
  };
  return { dir, upstream, lookups, full, swap, media, ...made };
}

const open = (cache: ReturnType<typeof encryptedCache>['cache'], ref: RecordingRef) =>
  cache.open(ref, { businessId: 'acme' });

/** Every byte a reader gets, or the error its stream ended with. */
async function read(stream: NodeJS.ReadableStream): Promise<Buffer | Error> {
  try {
    return await readAll(stream as AsyncIterable<unknown>);
  } catch (err) {
    return err as Error;
  }
}

function leftovers(dir: string, ref: RecordingRef): string[] {
  return readdirSync(dir).filter((n) => n.includes(ref.ownerCallSid) && !n.endsWith('.lock'));
}

/** The recording's files once a failed flight has cleaned up (up to 5 s), lock file aside. */
async function cleared(dir: string, ref: RecordingRef): Promise<string[]> {
  const deadline = Date.now() + 5000;
  while (leftovers(dir, ref).length > 0 && Date.now() < deadline) await sleep(10);
  return leftovers(dir, ref);
}

describe('encrypted recordings in the cache', () => {
  it('readers and the stored file get the plaintext; concurrent readers share one download', async (t) => {
    const plain = audioBytes(600_000);
    const c = encryptedCache(t, plain, { chunkSize: 32 * 1024, chunkDelayMs: 2 });
    const ref = newRef();
    const recs = await Promise.all([1, 2, 3, 4].map(() => open(c.cache, ref)));
    assert.equal(recs[0]!.size, plain.length, 'the size is the plaintext size: 16 bytes less');
    const bodies = await Promise.all(recs.map((r) => readAll(r.createReadStream(0, plain.length - 1))));
    for (const body of bodies) assert.ok(body.equals(plain));
    await settled(c.dir, ref);
    assert.ok(readFileSync(join(c.dir, `${ref.ownerCallSid}.mp3`)).equals(plain));
    assert.equal(c.full(), 1, 'one download');
    assert.equal(c.lookups.length, 1, 'one look-up of the encryption details');
    const hit = await open(c.cache, ref);
    assert.equal(hit.outcome, 'hit');
    assert.ok((await readAll(hit.createReadStream(1000, 1999))).equals(plain.subarray(1000, 2000)));
  });

  it('a far seek during the download is served by a slice, decrypted on its own', async (t) => {
    const plain = audioBytes(1_500_000);
    const c = encryptedCache(t, plain, { chunkSize: 16 * 1024, chunkDelayMs: 16 });
    const ref = newRef();
    const rec = await open(c.cache, ref);
    const far = await readAll(rec.createReadStream(1_400_000, 1_450_000));
    assert.ok(far.equals(plain.subarray(1_400_000, 1_450_001)));
    // The whole read also ends with the right bytes: the slice's plaintext and the download's agree.
    assert.ok((await readAll(rec.createReadStream(0, plain.length - 1))).equals(plain));
    await settled(c.dir, ref, 30_000);
    assert.ok(c.named('seek_ahead').length >= 1, `a slice served it: ${c.names().join(' ')}`);
    assert.ok(readFileSync(join(c.dir, `${ref.ownerCallSid}.mp3`)).equals(plain));
    assert.equal(c.full(), 1);
  });

  for (const [name, at] of [
    ['a flipped ciphertext byte', 300_000],
    ['a flipped tag byte', -1],
  ] as const) {
    it(`${name}: readers' streams error, nothing is committed, a later request downloads again`, async (t) => {
      const plain = audioBytes(400_000);
      const c = encryptedCache(t, plain, { chunkSize: 32 * 1024 });
      const good = c.media.data;
      const bad = Buffer.from(good);
      const index = at < 0 ? bad.length + at : at;
      bad[index] = bad[index]! ^ 0x40;
      c.swap({ chunkSize: 32 * 1024 });
      c.upstream.options = { ...c.upstream.options, data: bad };
      const ref = newRef();
      const rec = await open(c.cache, ref);
      const got = await read(rec.createReadStream(0, plain.length - 1));
      assert.ok(got instanceof Error, 'the reader saw an error, not a short body');
      assert.ok(
        c.capture.records.some(
          (l) => l.event === 'download_failed' && l.code === 'RECGATE_RECORDING_TAMPERED',
        ),
        'the flight failed with RECGATE_RECORDING_TAMPERED',
      );
      assert.equal(c.full(), 1, 'not retried within the flight');
      assert.deepEqual(await cleared(c.dir, ref), [], 'no file, no partial');
      c.upstream.options = { ...c.upstream.options, data: good };
      const again = await open(c.cache, ref);
      assert.notEqual(again.outcome, 'hit');
      assert.ok((await readAll(again.createReadStream(0, plain.length - 1))).equals(plain));
      await settled(c.dir, ref);
      assert.ok(readFileSync(join(c.dir, `${ref.ownerCallSid}.mp3`)).equals(plain));
    });
  }

  it('a body cut short without a length fails its tag and leaves nothing', async (t) => {
    const plain = audioBytes(300_000);
    const c = encryptedCache(t, plain, { noLength: true, shortAt: 200_000 });
    const ref = newRef();
    // Without a length, readers wait for the end to learn the size: open() itself fails.
    await assert.rejects(open(c.cache, ref), isCode('RECGATE_RECORDING_TAMPERED'));
    assert.ok(
      c.capture.records.some((l) => l.event === 'download_failed' && l.code === 'RECGATE_RECORDING_TAMPERED'),
    );
    assert.deepEqual(await cleared(c.dir, ref), []);
  });

  it('a body that breaks off is fetched again whole (a tag cannot be checked from the middle)', async (t) => {
    const plain = audioBytes(300_000);
    const c = encryptedCache(t, plain, { chunkSize: 32 * 1024, failAt: 150_000, failCalls: 1 });
    const ref = newRef();
    const rec = await open(c.cache, ref);
    assert.ok((await readAll(rec.createReadStream(0, plain.length - 1))).equals(plain));
    await settled(c.dir, ref);
    assert.ok(readFileSync(join(c.dir, `${ref.ownerCallSid}.mp3`)).equals(plain));
    assert.equal(c.upstream.calls.length, 2);
    assert.equal(c.full(), 2, 'the second fetch asked for the whole body, not a resume');
  });

  for (const [name, key] of [
    ['no key for the business', null],
    ['the wrong key', stranger.privateKey],
  ] as const) {
    it(`${name}: RECGATE_RECORDING_ENCRYPTED, nothing stored`, async (t) => {
      const c = encryptedCache(t, audioBytes(100_000), {}, key);
      const ref = newRef();
      await assert.rejects(open(c.cache, ref), isCode('RECGATE_RECORDING_ENCRYPTED'));
      assert.deepEqual(leftovers(c.dir, ref), []);
      assert.equal(c.upstream.bytesSent, 0, 'no body byte was read');
    });
  }
});
