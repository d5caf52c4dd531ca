/**
 * The emulator's Voice Recording Encryption: `POST /__emulator/public-keys` registers an RSA public key,
 * `encrypt_with` makes a recording whose media is AES-256-GCM ciphertext and tag, with Twilio-shaped
 * `encryption_details` on the resource that the matching private key opens; and the `flip_byte` fault.
 */
import assert from 'node:assert/strict';
import {
  createDecipheriv,
  createHash,
  constants as cryptoConstants,
  generateKeyPairSync,
  privateDecrypt,
} from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { CreatedRecording, Emulator } from '../../src/emulator/index.js';
import { api, control, start } from './helpers.js';

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicPem = keys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('emulator: encrypted recordings', () => {
  let emulator: Emulator;
  let keySid: string;
  let recording: CreatedRecording;

  before(async () => {
    emulator = await start({ logger: false });
    const res = await control(emulator, 'public-keys', { public_key: publicPem });
    assert.equal(res.status, 201);
    const body = (await res.json()) as { sid: string; account_sid: string };
    assert.match(body.sid, /^CR[0-9a-f]{32}$/);
    assert.equal(body.account_sid, emulator.accountSid);
    keySid = body.sid;
    recording = await emulator.createRecording({ bytes: 20_000, encrypt_with: keySid });
  });
  after(() => emulator.close());

  const media = async (headers: Record<string, string> = {}) => {
    const res = await api(emulator, `Recordings/${recording.recording_sid}.mp3`, { headers });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  };

  it('serves ciphertext and tag that the details and the private key open to the MP3', async () => {
    const res = await api(emulator, `Recordings/${recording.recording_sid}.json`);
    const json = (await res.json()) as { encryption_details: Record<string, string> };
    const details = json.encryption_details;
    assert.equal(details.type, 'rsa-aes');
    assert.equal(details.public_key_sid, keySid);
    assert.deepEqual(recording.encryption_details, details);
    const { body } = await media();
    assert.equal(body.length, recording.size + 16);
    assert.equal(recording.encrypted_size, body.length);
    const cek = privateDecrypt(
      { key: keys.privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      Buffer.from(details.encrypted_cek!, 'base64'),
    );
    const decipher = createDecipheriv('aes-256-gcm', cek, Buffer.from(details.iv!, 'base64'));
    decipher.setAuthTag(body.subarray(body.length - 16));
    const plain = Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]);
    assert.equal(sha256(plain), recording.sha256);
  });

  it('an unencrypted recording keeps encryption_details null', async () => {
    const plain = await emulator.createRecording({ bytes: 5_000 });
    assert.equal(plain.encryption_details, undefined);
    const res = await api(emulator, `Recordings/${plain.recording_sid}.json`);
    assert.equal(((await res.json()) as { encryption_details: unknown }).encryption_details, null);
  });

  it('refuses a bad key, a non-RSA key and an unknown encrypt_with, naming the field', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
      type: 'spki',
      format: 'pem',
    });
    for (const [body, field] of [
      [{ public_key: 'nope' }, /^public_key: /],
      [{ public_key: ec }, /^public_key: must be an RSA key/],
      [{ public_key: publicPem, sid: 'CR123' }, /^sid: /],
      [{}, /^public_key: /],
    ] as const) {
      const res = await control(emulator, 'public-keys', body);
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: { message: string } }).error.message, field);
    }
    const res = await control(emulator, 'recordings', { encrypt_with: `CR${'0'.repeat(32)}` });
    assert.equal(res.status, 400);
    assert.match(
      ((await res.json()) as { error: { message: string } }).error.message,
      /^encrypt_with: no such/,
    );
  });

  it('flip_byte inverts one byte of the media, counted from the end when negative, in ranges too', async () => {
    const good = (await media()).body;
    const sid = recording.recording_sid!;
    for (const [at, index] of [
      [undefined, Math.floor(good.length / 2)],
      [5, 5],
      [-1, good.length - 1],
    ] as const) {
      const res = await control(emulator, 'faults', {
        recording_sid: sid,
        kind: 'flip_byte',
        ...(at === undefined ? {} : { at }),
      });
      assert.equal(res.status, 201);
      const { body } = await media();
      const differing = [...body.keys()].filter((i) => body[i] !== good[i]);
      assert.deepEqual(differing, [index]);
      assert.equal(body[index], good[index]! ^ 0xff);
    }
    await control(emulator, 'faults', { recording_sid: sid, kind: 'flip_byte', at: 105 });
    const ranged = await media({ range: 'bytes=100-199' });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.body[5], good[105]! ^ 0xff);
    const res = await control(emulator, 'faults', { kind: 'http_500', at: 3 });
    assert.equal(res.status, 400, 'at applies only to flip_byte');
  });
});
