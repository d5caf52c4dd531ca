/**
 * `--store-encrypted` end to end: an encrypted recording's file on disk is the emulator's ciphertext and tag,
 * with the wrapped key (never the unwrapped one) in its identity record, and every read decrypts it: whole,
 * HEAD, ranges (suffix, the last 16 bytes) during and after the download, and after a restart. Removing the
 * business's key (then a reload) answers 409 for the finished file; a byte changed on disk cuts a whole read
 * (the tag) and, undetected, changes that byte in a range (documented); an unencrypted recording is stored
 * as before.
 */
import assert from 'node:assert/strict';
import {
  createCipheriv,
  constants as cryptoConstants,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import {
  closeSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { loadConfig } from '../../src/config/config.js';
import { encryptMedia } from '../../src/emulator/encryption.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import type { CachedRecording, RecordingRef } from '../../src/recordings/cache.js';
import { AtRestDecryption } from '../../src/recordings/decrypt/at-rest.js';
import { RecordingDecryption } from '../../src/recordings/decrypt/media.js';
import type { StoredEncryption } from '../../src/recordings/store/store.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { api } from '../emulator/helpers.js';
import { isCode, readAll, sha256, tempDir } from '../helpers/common.js';
import { settledFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';
import {
  audioBytes,
  encryptedResource,
  FakeUpstream,
  makeCache,
  newRef,
  type Outcome,
  requestOutcome,
  settled,
} from './helpers.js';

const pem = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }) as string;
const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });

interface Encrypted {
  callSid: CallSid;
  recordingSid: string;
  sha256: string;
  size: number;
  details: { encrypted_cek: string; iv: string };
}

describe('recordings kept encrypted on disk (--store-encrypted)', () => {
  let emulator: Emulator;
  let stack: Stack;
  let keysDir: string;
  let dataDir: string;
  let keySid: string;
  const dirs: Array<() => Promise<void>> = [];
  const startGateway = (storeEncrypted = true) =>
    startStack({
      sharedEmulator: emulator,
      dataDir,
      config: { recordingKeysDir: keysDir, storeEncrypted },
    });

  before(async () => {
    keysDir = tempDir({ after: (fn) => dirs.push(fn) });
    dataDir = tempDir({ after: (fn) => dirs.push(fn) });
    writeFileSync(join(keysDir, 'acme.pem'), pem(keys.privateKey));
    emulator = await startEmulator({ port: 0, logger: false });
    stack = await startGateway();
    keySid = await emulator.registerPublicKey({
      public_key: keys.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    });
  });
  after(async () => {
    await stack.close();
    await emulator.close();
    for (const fn of dirs) await fn();
  });

  async function encrypted(bytes: number): Promise<Encrypted> {
    const created = await emulator.createRecording({ bytes, encrypt_with: keySid });
    const callSid = created.call_sid as CallSid;
    await stack.register({ businessId: 'acme', callSid });
    return {
      callSid,
      recordingSid: created.recording_sid!,
      sha256: created.sha256!,
      size: created.size,
      details: created.encryption_details as Encrypted['details'],
    };
  }

  async function get(
    callSid: string,
    headers: Record<string, string> = {},
    method = 'GET',
  ): Promise<Outcome> {
    return requestOutcome(
      `${stack.url}/api/calls/${callSid}/download`,
      { authorization: `Bearer ${await stack.token('acme')}`, ...headers },
      method,
    );
  }

  const peaks = async (callSid: string) => {
    const res = await request(`${stack.url}/api/calls/${callSid}/peaks`, {
      headers: { authorization: `Bearer ${await stack.token('acme')}` },
    });
    await res.body.dump();
    return { status: res.statusCode };
  };
  const recordingsDir = () => join(dataDir, 'recordings');
  const onDisk = (callSid: string) => readFileSync(join(recordingsDir(), `${callSid}.mp3`));
  const mediaRequests = (recordingSid: string) => emulator.stats().media_requests[recordingSid] ?? 0;
  const ciphertext = async (recordingSid: string) => {
    const res = await api(emulator, `Recordings/${recordingSid}.mp3`);
    return Buffer.from(await res.arrayBuffer());
  };

  /** Every read a player makes, checked against the plaintext `plain`. */
  async function checkReads(rec: Encrypted, plain: Buffer): Promise<void> {
    const etag = (await get(rec.callSid)).headers.etag;
    const head = await get(rec.callSid, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(rec.size), 'HEAD says the plaintext size');
    assert.equal(head.headers.etag, etag);
    for (const [range, start, end] of [
      ['bytes=1000-1999', 1000, 1999],
      ['bytes=0-0', 0, 0],
      ['bytes=17-33', 17, 33],
      ['bytes=-100', rec.size - 100, rec.size - 1],
      ['bytes=-16', rec.size - 16, rec.size - 1],
      [`bytes=${rec.size - 20}-`, rec.size - 20, rec.size - 1],
    ] as const) {
      const res = await get(rec.callSid, { range });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${rec.size}`, range);
      assert.equal(res.headers['content-length'], String(end - start + 1), range);
      assert.ok(res.body.equals(plain.subarray(start, end + 1)), range);
    }
  }

  it('keeps the ciphertext and tag on disk, the wrapped key beside it, and serves the plaintext', async () => {
    const rec = await encrypted(40_000);
    const full = await get(rec.callSid);
    assert.equal(full.status, 200);
    assert.equal(full.headers['content-length'], String(rec.size));
    assert.equal(sha256(full.body), rec.sha256);
    await settledFiles(recordingsDir(), rec.callSid);
    assert.equal(mediaRequests(rec.recordingSid), 1);
    const stored = onDisk(rec.callSid);
    assert.ok(stored.equals(await ciphertext(rec.recordingSid)), 'the file is the ciphertext and tag');
    assert.equal(stored.length, rec.size + 16);
    const identity = JSON.parse(readFileSync(join(recordingsDir(), `.${rec.callSid}.mp3.id`), 'utf8'));
    assert.deepEqual(identity.encryption, { encryptedCek: rec.details.encrypted_cek, iv: rec.details.iv });
    const cek = privateDecrypt(
      { key: keys.privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      Buffer.from(rec.details.encrypted_cek, 'base64'),
    );
    for (const name of readdirSync(recordingsDir())) {
      const bytes = readFileSync(join(recordingsDir(), name));
      assert.equal(bytes.includes(cek), false, `${name} holds the unwrapped key`);
      assert.equal(bytes.includes(cek.toString('base64')), false, `${name} holds the unwrapped key`);
    }
    await checkReads(rec, full.body);
    // The one download, and this test's own fetch of the ciphertext: the reads made no other.
    assert.equal(mediaRequests(rec.recordingSid), 2);
  });

  it('decrypts reads of the download while it runs: whole, ranges, the last bytes', async () => {
    const rec = await encrypted(300_000);
    emulator.setThrottle({ bandwidth: 1_000_000 });
    let outcomes: Outcome[];
    try {
      outcomes = await Promise.all([
        get(rec.callSid),
        get(rec.callSid, { range: 'bytes=0-99' }),
        get(rec.callSid, { range: 'bytes=150000-150999' }),
        get(rec.callSid, { range: 'bytes=-16' }),
        get(rec.callSid),
      ]);
    } finally {
      emulator.setThrottle({ bandwidth: 0 });
    }
    const [whole, first, middle, last, again] = outcomes;
    assert.equal(sha256(whole!.body), rec.sha256);
    assert.equal(sha256(again!.body), rec.sha256);
    assert.ok(first!.body.equals(whole!.body.subarray(0, 100)));
    assert.ok(middle!.body.equals(whole!.body.subarray(150_000, 151_000)));
    assert.equal(last!.headers['content-range'], `bytes ${rec.size - 16}-${rec.size - 1}/${rec.size}`);
    assert.ok(last!.body.equals(whole!.body.subarray(rec.size - 16)));
    await settledFiles(recordingsDir(), rec.callSid);
    assert.ok(onDisk(rec.callSid).equals(await ciphertext(rec.recordingSid)));
  });

  it('a byte changed on disk cuts a whole read; a range over it is not authenticated (documented)', async () => {
    const rec = await encrypted(40_000);
    const plain = (await get(rec.callSid)).body;
    await settledFiles(recordingsDir(), rec.callSid);
    const file = join(recordingsDir(), `${rec.callSid}.mp3`);
    const fd = openSync(file, 'r+');
    try {
      const byte = Buffer.alloc(1);
      readSync(fd, byte, 0, 1, 20_000);
      byte[0] = byte[0]! ^ 0xff;
      writeSync(fd, byte, 0, 1, 20_000);
    } finally {
      closeSync(fd);
    }
    const whole = await get(rec.callSid);
    assert.equal(whole.status, 200);
    assert.equal(whole.whole, false, 'the whole read is cut, never ended as valid');
    assert.ok(whole.body.length < rec.size);
    const range = await get(rec.callSid, { range: 'bytes=19990-20009' });
    assert.equal(range.status, 206);
    const expected = Buffer.from(plain.subarray(19_990, 20_010));
    expected[10] = expected[10]! ^ 0xff;
    assert.ok(range.body.equals(expected), 'CTR: the changed byte comes out changed, nothing else');
  });

  it('a new gateway on the same data directory serves the file without downloading it again, with the option or without', async () => {
    const rec = await encrypted(30_000);
    const plain = (await get(rec.callSid)).body;
    assert.equal(sha256(plain), rec.sha256);
    await settledFiles(recordingsDir(), rec.callSid);
    await stack.close();
    stack = await startGateway();
    await checkReads(rec, plain);
    assert.equal(sha256((await get(rec.callSid)).body), rec.sha256);
    // Without the option, files kept encrypted are still decrypted (with the keys), not served as they are.
    await stack.close();
    stack = await startGateway(false);
    await checkReads(rec, plain);
    assert.equal(sha256((await get(rec.callSid)).body), rec.sha256);
    await stack.close();
    stack = await startGateway();
    assert.equal(mediaRequests(rec.recordingSid), 1);
  });

  it("removing the business's key (then a reload) answers 409 for the finished file; restoring it serves again", async () => {
    const rec = await encrypted(20_000);
    assert.equal(sha256((await get(rec.callSid)).body), rec.sha256);
    await settledFiles(recordingsDir(), rec.callSid);
    assert.equal((await peaks(rec.callSid)).status, 200);
    assert.deepEqual(
      readdirSync(recordingsDir()).filter((n) => n.startsWith(rec.callSid) && n.includes('peaks')),
      [],
      'no peaks kept beside a recording kept encrypted',
    );
    const keyFile = join(keysDir, 'acme.pem');
    renameSync(keyFile, join(keysDir, 'acme.pem.removed'));
    try {
      stack.gateway.reloadRecordingKeys();
      for (const [method, headers] of [
        ['GET', {}],
        ['GET', { range: 'bytes=0-99' }],
        ['HEAD', {}],
      ] as const) {
        const res = await get(rec.callSid, headers, method);
        assert.equal(res.status, 409, `${method} ${JSON.stringify(headers)}`);
        if (method === 'GET') {
          assert.equal(JSON.parse(res.body.toString()).error.code, 'RECGATE_RECORDING_ENCRYPTED');
        }
      }
      assert.equal((await peaks(rec.callSid)).status, 409, 'the waveform too');
    } finally {
      renameSync(join(keysDir, 'acme.pem.removed'), keyFile);
    }
    stack.gateway.reloadRecordingKeys();
    assert.equal(sha256((await get(rec.callSid)).body), rec.sha256);
    assert.equal(mediaRequests(rec.recordingSid), 1);
  });

  it('an unencrypted recording is stored and served as before', async () => {
    const created = await emulator.createRecording({ bytes: 20_000 });
    const callSid = created.call_sid as CallSid;
    await stack.register({ businessId: 'acme', callSid });
    const res = await get(callSid);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), created.sha256);
    await settledFiles(recordingsDir(), callSid);
    assert.equal(sha256(onDisk(callSid)), created.sha256);
  });
});

describe('AtRestDecryption', () => {
  const ref: RecordingRef = {
    ownerCallSid: `CA${'1'.repeat(32)}` as CallSid,
    recordingSid: `RE${'2'.repeat(32)}` as RecordingSid,
  };
  const plaintext = randomBytes(5000);
  const cek = randomBytes(32);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', cek, iv);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  const wrap = (key: Buffer) =>
    publicEncrypt(
      { key: keys.publicKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      key,
    ).toString('base64');
  const stored = (encryptedCek = wrap(cek)) => ({ encryptedCek, iv: iv.toString('base64') });
  const kept = (encryption: StoredEncryption | undefined): CachedRecording => ({
    size: body.length,
    etag: '"cipher"',
    lastModified: new Date(0),
    outcome: 'hit',
    complete: true,
    encryption,
    createReadStream: (start, end) => Readable.from([body.subarray(start, end + 1)]),
    readNow: (start, end) => Buffer.from(body.subarray(start, end + 1)),
  });
  /** Keys that count how often they are asked, and can be swapped or removed. */
  const keyring = () => {
    let key: KeyObject | undefined = keys.privateKey;
    return {
      get: (_businessId: string) => key,
      set: (next: KeyObject | undefined) => {
        key = next;
      },
    };
  };

  it('hands back a recording whose bytes are plain as it is', () => {
    const plain = kept(undefined);
    assert.equal(new AtRestDecryption({ keys: keyring() }).open(plain, ref, 'acme'), plain);
  });

  it('decrypts whole and ranged reads in plaintext terms; the ETag names the plaintext size', async () => {
    const view = new AtRestDecryption({ keys: keyring() }).open(kept(stored()), ref, 'acme');
    assert.equal(view.size, plaintext.length);
    assert.equal(view.etag, `"${ref.recordingSid}-${plaintext.length}"`);
    assert.equal(view.encryption, undefined);
    assert.ok((await readAll(view.createReadStream(0, view.size - 1))).equals(plaintext));
    for (const [start, end] of [
      [0, 0],
      [15, 16],
      [4983, 4999],
      [4984, 4999],
    ] as const) {
      const got = await readAll(view.createReadStream(start, end));
      assert.ok(got.equals(plaintext.subarray(start, end + 1)), `${start}-${end}`);
    }
    assert.throws(() => view.createReadStream(0, view.size), RangeError, 'the tag is never read out');
    assert.throws(() => view.readNow!(0, view.size), RangeError);
    assert.ok(view.readNow!(4990, 4999)!.equals(plaintext.subarray(4990)), 'a small range at once');
    assert.ok(view.readNow!(15, 16)!.equals(plaintext.subarray(15, 17)));
    assert.equal(view.readNow!(0, view.size - 1), undefined, 'the whole streams, to check its tag');
  });

  it('keeps at most maxKeys unwrapped keys, drops them on forget, and needs the key at every open', () => {
    const ring = keyring();
    const atRest = new AtRestDecryption({ keys: ring, maxKeys: 2 });
    // OAEP is randomized: each wrap of the same key is another stored record, as for other recordings.
    for (let i = 0; i < 3; i++) atRest.open(kept(stored(wrap(cek))), ref, 'acme');
    assert.equal(atRest.size, 2);
    atRest.forget();
    assert.equal(atRest.size, 0);
    const record = stored();
    atRest.open(kept(record), ref, 'acme');
    ring.set(undefined);
    assert.throws(() => atRest.open(kept(record), ref, 'acme'), isCode('RECGATE_RECORDING_ENCRYPTED'));
    ring.set(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
    assert.throws(
      () => atRest.open(kept(record), ref, 'acme'),
      isCode('RECGATE_RECORDING_ENCRYPTED'),
      'a replaced key does not reuse what the old one unwrapped',
    );
    assert.throws(
      () => new AtRestDecryption({ keys: undefined }).open(kept(record), ref, 'acme'),
      isCode('RECGATE_RECORDING_ENCRYPTED'),
    );
  });
});

it('--store-encrypted comes from the flag or RECGATE_STORE_ENCRYPTED=1, off by default, and needs keys', () => {
  const keysDir = { recordingKeysDir: '/etc/recgate/keys' };
  assert.equal(loadConfig({ demo: true }, {}).storeEncrypted, false);
  assert.equal(loadConfig({ demo: true, ...keysDir }, { RECGATE_STORE_ENCRYPTED: '1' }).storeEncrypted, true);
  assert.equal(loadConfig({ demo: true, ...keysDir, storeEncrypted: true }, {}).storeEncrypted, true);
  assert.throws(
    () => loadConfig({ demo: true, storeEncrypted: true }, {}),
    /store-encrypted needs --recording-keys-dir/,
  );
});

it("two caches on one directory: the one that follows the other's download reads the plaintext, during and after", async (t) => {
  const dir = tempDir(t);
  const plain = audioBytes(120_000);
  const media = encryptMedia(plain, `CR${'1'.repeat(32)}`, keys.publicKey);
  const upstream = new FakeUpstream({ data: media.data, chunkSize: 8192, chunkDelayMs: 5 });
  const decryption = new RecordingDecryption({
    upstream,
    headFor: async () => upstream,
    lookup: async (sid) => encryptedResource(sid, media.details),
    keys: { get: () => keys.privateKey },
    storeEncrypted: true,
  });
  const atRest = new AtRestDecryption({ keys: { get: () => keys.privateKey } });
  const options = {
    mediaFor: (business: string) => decryption.forBusiness(business),
    decryptStored: (recording: CachedRecording, ref: RecordingRef, business: string) =>
      atRest.open(recording, ref, business),
  };
  const first = makeCache(t, dir, upstream, options).cache;
  const second = makeCache(t, dir, upstream, options).cache;
  const ref = newRef();
  const downloading = await first.open(ref, { businessId: 'acme' });
  assert.equal(downloading.size, plain.length);
  const following = await second.open(ref, { businessId: 'acme' });
  assert.equal(following.outcome, 'wait', "it follows the first cache's download");
  assert.equal(following.size, plain.length);
  const [a, b, tail] = await Promise.all([
    readAll(downloading.createReadStream(0, plain.length - 1)),
    readAll(following.createReadStream(0, plain.length - 1)),
    readAll(following.createReadStream(plain.length - 16, plain.length - 1)),
  ]);
  assert.ok(a.equals(plain));
  assert.ok(b.equals(plain));
  assert.ok(tail.equals(plain.subarray(plain.length - 16)));
  await settled(dir, ref);
  assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(media.data));
  // The follower's own flight ends once it has seen the commit, a moment after the file is there.
  let hit = await second.open(ref, { businessId: 'acme' });
  for (let i = 0; i < 200 && hit.outcome === 'wait'; i++) {
    await sleep(10);
    hit = await second.open(ref, { businessId: 'acme' });
  }
  assert.equal(hit.outcome, 'hit');
  assert.ok((await readAll(hit.createReadStream(0, plain.length - 1))).equals(plain));
  assert.equal(upstream.calls.filter((c) => c.start === undefined).length, 1, 'one download');
});
