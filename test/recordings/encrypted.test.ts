/**
 * Encrypted recordings end to end: the emulator encrypts as Twilio's Voice Recording Encryption does
 * (`encrypt_with`), and the gateway with `--recording-keys-dir` serves the plaintext: whole, by Range during
 * and after the download, HEAD with the plaintext size, one upstream download for concurrent requests. A
 * tampered body or tag never becomes the file and the next request downloads again; a body cut short is
 * fetched again; no key or the wrong key answers 409 RECGATE_RECORDING_ENCRYPTED with nothing stored, and a
 * key dropped into the directory later is used without a restart.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { loadConfig } from '../../src/config/config.js';
import { startGateway } from '../../src/server.js';
import type { CallSid } from '../../src/sid.js';
import { hex32, sha256, tempDir } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { settledFiles } from '../helpers/recordings.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';
import { requestOutcome } from './helpers.js';

const pem = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }) as string;
const acmeKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });

describe('encrypted recordings through the gateway', () => {
  let stack: Stack;
  let keysDir: string;
  let acmePublicKeySid: string;
  let otherPublicKeySid: string;
  const capture = captureLogs({ plain: true });
  const dirs: Array<() => Promise<void>> = [];

  before(async () => {
    keysDir = tempDir({ after: (fn) => dirs.push(fn) });
    writeFileSync(join(keysDir, 'acme.pem'), pem(acmeKeys.privateKey));
    stack = await startStack({ config: { recordingKeysDir: keysDir }, logger: capture.logger });
    acmePublicKeySid = await stack.emulator.registerPublicKey({
      public_key: acmeKeys.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    });
    otherPublicKeySid = await stack.emulator.registerPublicKey({
      public_key: otherKeys.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    });
  });
  after(async () => {
    await stack.close();
    for (const fn of dirs) await fn();
  });

  async function encrypted(business: string, bytes: number, keySid = acmePublicKeySid) {
    const created = await stack.emulator.createRecording({ bytes, encrypt_with: keySid });
    const callSid = created.call_sid as CallSid;
    await stack.register({ businessId: business, callSid });
    return { callSid, recordingSid: created.recording_sid!, sha256: created.sha256!, size: created.size };
  }

  async function get(
    business: string,
    callSid: string,
    headers: Record<string, string> = {},
    method = 'GET',
    query = '',
  ) {
    return requestOutcome(
      `${stack.url}/api/calls/${callSid}/download${query}`,
      { authorization: `Bearer ${await stack.token(business)}`, ...headers },
      method,
    );
  }

  const mediaRequests = (recordingSid: string) => stack.emulator.stats().media_requests[recordingSid] ?? 0;
  const recordingsDir = () => join(stack.dataDir, 'recordings');
  const files = (callSid: string) =>
    readdirSync(recordingsDir()).filter((n) => n.includes(callSid) && !n.endsWith('.lock'));
  const failedWith = (code: string, recordingSid: string) =>
    capture.records.some(
      (l) => l.event === 'download_failed' && l.code === code && l.recordingSid === recordingSid,
    );

  it('serves the plaintext: HEAD first, then GET, Range after; the file on disk is the plaintext', async () => {
    const rec = await encrypted('acme', 40_000);
    const head = await get('acme', rec.callSid, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(rec.size), 'HEAD says the plaintext size');
    const full = await get('acme', rec.callSid);
    assert.equal(full.status, 200);
    assert.equal(sha256(full.body), rec.sha256);
    await settledFiles(recordingsDir(), rec.callSid);
    assert.equal(sha256(readFileSync(join(recordingsDir(), `${rec.callSid}.mp3`))), rec.sha256);
    const range = await get('acme', rec.callSid, { range: 'bytes=1000-1999' });
    assert.equal(range.status, 206);
    assert.equal(range.headers['content-range'], `bytes 1000-1999/${rec.size}`);
    assert.ok(range.body.equals(full.body.subarray(1000, 2000)));
    const tail = await get('acme', rec.callSid, { range: 'bytes=-100' });
    assert.ok(tail.body.equals(full.body.subarray(rec.size - 100)));
    assert.equal(mediaRequests(rec.recordingSid), 1);
  });

  it('concurrent requests and ranges during the download share one upstream download', async () => {
    const rec = await encrypted('acme', 300_000);
    stack.emulator.setThrottle({ bandwidth: 1_000_000 });
    try {
      const outcomes = await Promise.all([
        get('acme', rec.callSid),
        get('acme', rec.callSid),
        get('acme', rec.callSid, { range: 'bytes=0-99' }),
        get('acme', rec.callSid, { range: 'bytes=150000-150999' }),
        get('acme', rec.callSid),
      ]);
      const whole = outcomes[0]!.body;
      assert.equal(sha256(whole), rec.sha256);
      for (const i of [1, 4]) assert.equal(sha256(outcomes[i]!.body), rec.sha256);
      assert.ok(outcomes[2]!.body.equals(whole.subarray(0, 100)));
      assert.ok(outcomes[3]!.body.equals(whole.subarray(150_000, 151_000)));
    } finally {
      stack.emulator.setThrottle({ bandwidth: 0 });
    }
    await settledFiles(recordingsDir(), rec.callSid);
    // One full download; a far range may add a seek-ahead slice, never a second full download.
    const fulls = capture.records.filter(
      (l) => l.event === 'cache_miss' && l.recordingSid === rec.recordingSid,
    );
    assert.equal(fulls.length, 1);
    assert.ok(mediaRequests(rec.recordingSid) <= 2, `${mediaRequests(rec.recordingSid)} media requests`);
  });

  for (const [name, at] of [
    ['a tampered body', 20_000],
    ['a tampered tag', -1],
  ] as const) {
    it(`${name} is never served whole nor stored; the next request downloads again`, async () => {
      const rec = await encrypted('acme', 40_000);
      stack.emulator.addFault({ recording_sid: rec.recordingSid, kind: 'flip_byte', at });
      const first = await get('acme', rec.callSid);
      assert.ok(
        first.status === 502 || !first.whole,
        `a 502 or a cut body, not a whole answer (status ${first.status}, ${first.body.length} bytes)`,
      );
      assert.notEqual(sha256(first.body), rec.sha256);
      assert.ok(failedWith('RECGATE_RECORDING_TAMPERED', rec.recordingSid));
      assert.deepEqual(await cleared(rec.callSid), []);
      const second = await get('acme', rec.callSid);
      assert.equal(second.status, 200);
      assert.equal(sha256(second.body), rec.sha256);
      assert.equal(mediaRequests(rec.recordingSid), 2);
    });
  }

  it('a body cut short is fetched again, whole, and served right', async () => {
    const rec = await encrypted('acme', 40_000);
    stack.emulator.addFault({ recording_sid: rec.recordingSid, kind: 'short_body', after_bytes: 25_000 });
    const res = await get('acme', rec.callSid);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), rec.sha256);
    assert.equal(mediaRequests(rec.recordingSid), 2);
  });

  it('a body cut short with no length to tell fails its tag and is not stored', async () => {
    const rec = await encrypted('acme', 40_000);
    stack.emulator.addFault({
      recording_sid: rec.recordingSid,
      kind: 'short_body',
      after_bytes: 30_000,
      omit_content_length: true,
    });
    const res = await get('acme', rec.callSid);
    assert.equal(res.status, 502);
    assert.equal(JSON.parse(res.body.toString()).error.code, 'RECGATE_RECORDING_TAMPERED');
    assert.deepEqual(await cleared(rec.callSid), []);
  });

  it('no key for the business: 409 RECGATE_RECORDING_ENCRYPTED, nothing stored; a key added later works', async () => {
    const rec = await encrypted('globex', 40_000);
    for (const method of ['GET', 'HEAD']) {
      const res = await get('globex', rec.callSid, {}, method);
      assert.equal(res.status, 409, method);
      if (method === 'GET')
        assert.equal(JSON.parse(res.body.toString()).error.code, 'RECGATE_RECORDING_ENCRYPTED');
    }
    assert.deepEqual(files(rec.callSid), []);
    writeFileSync(join(keysDir, 'globex.pem'), pem(acmeKeys.privateKey));
    const res = await get('globex', rec.callSid);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), rec.sha256);
  });

  it('the wrong key: 409 RECGATE_RECORDING_ENCRYPTED, nothing stored', async () => {
    const rec = await encrypted('acme', 40_000, otherPublicKeySid);
    const res = await get('acme', rec.callSid);
    assert.equal(res.status, 409);
    assert.equal(JSON.parse(res.body.toString()).error.code, 'RECGATE_RECORDING_ENCRYPTED');
    assert.deepEqual(files(rec.callSid), []);
  });

  it('a reload (SIGHUP) that finds a bad file names it and keeps the keys it had', async () => {
    const bad = join(keysDir, 'broken.pem');
    writeFileSync(bad, 'not a key');
    try {
      assert.throws(() => stack.gateway.reloadRecordingKeys(), /broken\.pem/);
      const rec = await encrypted('acme', 20_000);
      const res = await get('acme', rec.callSid);
      assert.equal(res.status, 200);
      assert.equal(sha256(res.body), rec.sha256);
    } finally {
      rmSync(bad);
    }
    stack.gateway.reloadRecordingKeys();
  });

  it('renditions of an encrypted recording (here the WAV) are served as Twilio sends them', async () => {
    const rec = await encrypted('acme', 20_000);
    const res = await get('acme', rec.callSid, {}, 'GET', '?format=wav');
    assert.equal(res.status, 200);
    assert.equal(res.body.subarray(0, 4).toString('latin1'), 'RIFF');
  });

  it('an unencrypted recording beside them plays as before', async () => {
    const created = await stack.emulator.createRecording({ bytes: 20_000 });
    await stack.register({ businessId: 'acme', callSid: created.call_sid as CallSid });
    const res = await get('acme', created.call_sid);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), created.sha256);
  });

  /** The call's files once a failed download has cleaned up (up to 5 s). */
  async function cleared(callSid: string): Promise<string[]> {
    const deadline = Date.now() + 5000;
    while (files(callSid).length > 0 && Date.now() < deadline) await sleep(10);
    return files(callSid);
  }
});

it('a bad key file stops the gateway at start, naming the file', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, `biz-${hex32()}.pem`), 'not a key');
  const config = loadConfig(
    {
      port: 0,
      dataDir: tempDir(t),
      jwtSecret: JWT_SECRET,
      twilioApiBase: 'http://127.0.0.1:9',
      twilioAccountSid: `AC${hex32()}`,
      twilioAuthToken: 'token',
      logLevel: 'silent',
      recordingKeysDir: dir,
    },
    {},
  );
  await assert.rejects(startGateway(config), /biz-[0-9a-f]{32}\.pem/);
});

it('without --recording-keys-dir nothing is looked up: an encrypted recording fails the media check and is not stored', async (t) => {
  const stack = await startStack();
  t.after(() => stack.close());
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keySid = await stack.emulator.registerPublicKey({
    public_key: keys.publicKey.export({ type: 'spki', format: 'pem' }) as string,
  });
  const created = await stack.emulator.createRecording({ bytes: 20_000, encrypt_with: keySid });
  const callSid = created.call_sid as CallSid;
  await stack.register({ businessId: 'acme', callSid });
  const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
    headers: { authorization: `Bearer ${await stack.token('acme')}` },
  });
  const body = (await res.body.json()) as { error: { code: string } };
  assert.equal(body.error.code, 'RECGATE_UPSTREAM_BAD_MEDIA', 'the ciphertext is not audio');
  assert.equal(res.statusCode, 502);
  assert.deepEqual(
    readdirSync(join(stack.dataDir, 'recordings')).filter((n) => n.startsWith(callSid) && n.endsWith('.mp3')),
    [],
    'nothing stored',
  );
});
