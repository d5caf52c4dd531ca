/**
 * The cipher side of encrypted recordings (src/recordings/decrypt/gcm.ts) and the key directory
 * (keys-dir.ts): a whole body decrypts and verifies in any chunking, a flipped ciphertext or tag byte and a
 * truncated body fail before the last plaintext block is released, a range decrypts from any offset with the
 * counter block J0+1+floor(X/16), and keys load, reload and fail as documented.
 */
import assert from 'node:assert/strict';
import {
  createCipheriv,
  createDecipheriv,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { encryptMedia } from '../../src/emulator/encryption.js';
import {
  CannotOpen,
  type ContentKey,
  counterBlock,
  openRange,
  openWhole,
  parseEncryptionDetails,
  unwrapContentKey,
  verifyWhole,
} from '../../src/recordings/decrypt/gcm.js';
import { DirectoryRecordingKeys } from '../../src/recordings/decrypt/keys-dir.js';
import { readAll, tempDir } from '../helpers/common.js';

const pair = () => generateKeyPairSync('rsa', { modulusLength: 2048 });
const owner = pair();
const stranger = pair();
const pem = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }) as string;

function sealed(plaintext: Buffer): { key: ContentKey; body: Buffer } {
  const key = { cek: randomBytes(32), iv: randomBytes(12) };
  const cipher = createCipheriv('aes-256-gcm', key.cek, key.iv);
  return { key, body: Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]) };
}

/** `body` cut into pieces of the given sizes (the last takes the rest). */
function chunks(body: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const size of sizes) {
    if (at >= body.length) break;
    out.push(body.subarray(at, at + size));
    at += size;
  }
  if (at < body.length) out.push(body.subarray(at));
  return out;
}

class BadTag extends Error {}

/** What openWhole (or `through`) emits before it ends or fails, and how it failed. */
async function openAll(
  key: ContentKey,
  pieces: Buffer[],
  through = openWhole,
): Promise<{ out: Buffer; err: unknown }> {
  const got: Buffer[] = [];
  const stream = Readable.from(pieces).pipe(through(key, (why) => new BadTag(why)));
  try {
    for await (const chunk of stream) got.push(chunk as Buffer);
    return { out: Buffer.concat(got), err: undefined };
  } catch (err) {
    return { out: Buffer.concat(got), err };
  }
}

describe('openWhole', () => {
  const plaintext = randomBytes(100_003);
  const { key, body } = sealed(plaintext);

  it('decrypts and verifies a whole body however it is chunked', async () => {
    for (const sizes of [
      [body.length],
      [1, 1, 1, 7, 16, 31, 32, 33],
      [65_536],
      [100_000, 1, 1, 1],
      [100_003, 15],
    ]) {
      const { out, err } = await openAll(key, chunks(body, sizes));
      assert.equal(err, undefined, `chunking ${sizes.join(',')}`);
      assert.ok(out.equals(plaintext), `chunking ${sizes.join(',')}`);
    }
  });

  it('decrypts bodies shorter than the hold-back, down to an empty plaintext', async () => {
    for (const size of [0, 1, 15, 16, 17, 40]) {
      const small = sealed(randomBytes(size));
      const { out, err } = await openAll(small.key, chunks(small.body, [3, 5]));
      assert.equal(err, undefined);
      assert.equal(out.length, size);
    }
  });

  for (const [name, index] of [
    ['a ciphertext byte in the middle', 50_000],
    ['the last ciphertext byte', body.length - 17],
    ['the first byte', 0],
    ['a tag byte', body.length - 1],
  ] as const) {
    it(`fails on ${name}, never releasing the last plaintext block`, async () => {
      const bad = Buffer.from(body);
      bad[index] = bad[index]! ^ 0x01;
      const { out, err } = await openAll(key, chunks(bad, [4096]));
      assert.ok(err instanceof BadTag, String(err));
      assert.ok(out.length < plaintext.length, `${out.length} of ${plaintext.length} bytes released`);
    });
  }

  it('fails on a truncated body (the last 16 bytes are no tag) and on one shorter than a tag', async () => {
    for (const cut of [1, 16, 17, 1000]) {
      const { out, err } = await openAll(key, [body.subarray(0, body.length - cut)]);
      assert.ok(err instanceof BadTag, `cut ${cut}: ${String(err)}`);
      assert.ok(out.length < plaintext.length - cut);
    }
    const { err } = await openAll(key, [body.subarray(0, 10)]);
    assert.match(String(err), /shorter than a GCM tag/);
  });

  it('fails under another key', async () => {
    const { err } = await openAll({ cek: randomBytes(32), iv: key.iv }, [body]);
    assert.ok(err instanceof BadTag);
  });
});

describe('verifyWhole', () => {
  const plaintext = randomBytes(50_001);
  const { key, body } = sealed(plaintext);

  const verifyAll = (k: ContentKey, pieces: Buffer[]) => openAll(k, pieces, verifyWhole);

  it('passes the ciphertext and tag on unchanged however it is chunked', async () => {
    for (const sizes of [[body.length], [1, 15, 16, 17], [4096], [50_001, 1, 1]]) {
      const { out, err } = await verifyAll(key, chunks(body, sizes));
      assert.equal(err, undefined, `chunking ${sizes.join(',')}`);
      assert.ok(out.equals(body), `chunking ${sizes.join(',')}`);
    }
  });

  for (const [name, index] of [
    ['a ciphertext byte', 20_000],
    ['a tag byte', body.length - 1],
  ] as const) {
    it(`fails on ${name}, never releasing the tag`, async () => {
      const bad = Buffer.from(body);
      bad[index] = bad[index]! ^ 0x01;
      const { out, err } = await verifyAll(key, chunks(bad, [4096]));
      assert.ok(err instanceof BadTag, String(err));
      assert.ok(out.length <= body.length - 16, `${out.length} of ${body.length} bytes released`);
    });
  }

  it('fails on a truncated body and on one shorter than a tag', async () => {
    const { err } = await verifyAll(key, [body.subarray(0, body.length - 100)]);
    assert.ok(err instanceof BadTag);
    assert.match(String((await verifyAll(key, [body.subarray(0, 10)])).err), /shorter than a GCM tag/);
  });
});

describe('openRange', () => {
  const plaintext = randomBytes(70_000);
  const { key, body } = sealed(plaintext);

  it('decrypts a range from any offset, alone, and drops what lies in the tag', async () => {
    for (const start of [0, 1, 15, 16, 17, 4095, 4096, 65_537, 69_999]) {
      const limit = plaintext.length - start;
      const out = await readAll(
        Readable.from(chunks(body.subarray(start), [7, 4096])).pipe(openRange(key, start, limit)),
      );
      assert.ok(out.equals(plaintext.subarray(start)), `from ${start}`);
    }
    const mid = await readAll(Readable.from([body.subarray(100, 5000)]).pipe(openRange(key, 100, 4900)));
    assert.ok(mid.equals(plaintext.subarray(100, 5000)));
  });

  it('keys byte X with the counter block J0+1+floor(X/16), J0 = IV||00000001', () => {
    for (const x of [0, 15, 16, 33, 69_999]) {
      const block = counterBlock(key.iv, x);
      assert.ok(block.subarray(0, 12).equals(key.iv));
      assert.equal(block.readUInt32BE(12), 1 + 1 + Math.floor(x / 16));
      // The same keystream GCM used: one block of AES-CTR from that counter opens the block holding X.
      const start = x - (x % 16);
      const ctr = createDecipheriv('aes-256-ctr', key.cek, block);
      const opened = ctr.update(body.subarray(start, start + 16));
      assert.ok(opened.equals(plaintext.subarray(start, start + 16)));
    }
    assert.throws(() => counterBlock(key.iv, 16 * 0xffffffff), RangeError);
  });
});

describe('encryption details and keys', () => {
  const media = encryptMedia(randomBytes(1000), 'CR'.padEnd(34, 'a'), owner.publicKey);

  it('parses Twilio encryption_details and unwraps the key with the matching private key only', () => {
    const details = parseEncryptionDetails(media.details);
    assert.equal(details.publicKeySid, media.details.public_key_sid);
    const key = unwrapContentKey(details, owner.privateKey);
    assert.equal(key.cek.length, 32);
    assert.throws(() => unwrapContentKey(details, stranger.privateKey), CannotOpen);
  });

  it('refuses details it cannot read, naming the field', () => {
    const good = media.details;
    for (const [raw, field] of [
      [null, /not an object/],
      [{ ...good, type: 'aes-only' }, /type/],
      [{ ...good, encrypted_cek: 'not base64!' }, /encrypted_cek/],
      [{ ...good, iv: undefined }, /iv/],
      [{ ...good, iv: randomBytes(16).toString('base64') }, /12-byte IVs/],
    ] as const) {
      assert.throws(
        () => parseEncryptionDetails(raw),
        (err: unknown) => err instanceof CannotOpen && field.test(err.message),
      );
    }
  });

  it('reads a directory of {business_id}.pem keys, re-reads on a miss and on reload', (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'acme.pem'), pem(owner.privateKey));
    writeFileSync(join(dir, 'notes.txt'), 'not a key, not a .pem: ignored');
    const keys = DirectoryRecordingKeys.open({ dir });
    assert.equal(keys.size, 1);
    assert.equal(keys.get('acme')?.asymmetricKeyType, 'rsa');
    assert.equal(keys.get('globex'), undefined);
    writeFileSync(join(dir, 'globex.pem'), pem(stranger.privateKey));
    assert.ok(keys.get('globex')?.equals(stranger.privateKey), 'a key added later is read on a miss');
    for (const id of ['../acme', '.acme', 'a/b', '']) assert.equal(keys.get(id), undefined);

    writeFileSync(join(dir, 'broken.pem'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    assert.throws(() => keys.reload(), /broken\.pem/);
    assert.ok(keys.get('acme')?.equals(owner.privateKey), 'the keys loaded before stay');
  });

  it('names the file of a bad key at start: not a key, a public key, not RSA', (t) => {
    const cases = [
      ['garbage', 'hello'],
      ['public', owner.publicKey.export({ type: 'spki', format: 'pem' }) as string],
      ['ec', pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)],
    ];
    for (const [name, content] of cases) {
      const dir = tempDir(t);
      writeFileSync(join(dir, `${name}.pem`), content!);
      assert.throws(() => DirectoryRecordingKeys.open({ dir }), new RegExp(`${name}\\.pem`));
    }
    assert.throws(() => DirectoryRecordingKeys.open({ dir: join(tempDir(t), 'missing') }), /cannot be read/);
  });
});
