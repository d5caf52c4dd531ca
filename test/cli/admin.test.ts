/**
 * The admin commands (`recgate purge`, `prefetch`, `stats`), run from source as an operator runs them,
 * against the in-process emulator and a gateway on the same temporary data dir: their output, their exit
 * codes (0 done, 1 failed, 2 bad usage), and that what they do is what the gateways then see.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { callFiles, finishedNames, settledFiles } from '../helpers/recordings.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

const ENTRY = fileURLToPath(new URL('../helpers/cli-entry.ts', import.meta.url));
const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

interface Outcome {
  code: number;
  out: string;
  err: string;
}

/** Runs `recgate …` from source; async, so the in-process emulator and gateway keep answering. */
export async function recgate(
  stack: Stack,
  args: string[],
  env: Record<string, string> = {},
): Promise<Outcome> {
  const clean: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(clean)) if (/^(RECGATE_|TWILIO_)/.test(name)) delete clean[name];
  Object.assign(clean, {
    RECGATE_JWT_SECRET: JWT_SECRET,
    TWILIO_ACCOUNT_SID: stack.emulator.accountSid,
    TWILIO_AUTH_TOKEN: stack.emulator.authToken,
    TWILIO_API_BASE: stack.emulator.url,
    RECGATE_DATA_DIR: stack.dataDir,
    ...env,
  });
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', ENTRY, ...args],
      { env: clean, timeout: 60_000 },
    );
    return { code: 0, out: stdout, err: stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    assert.equal(typeof e.code, 'number', `recgate did not exit: ${e.stderr}`);
    return { code: e.code!, out: e.stdout ?? '', err: e.stderr ?? '' };
  }
}

async function play(stack: Stack, callSid: string, business: string) {
  const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
    headers: { authorization: `Bearer ${await stack.token(business)}` },
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, bytes };
}

/** A call at the emulator with one recording of `bytes`, registered to `business`. */
async function recordedCall(stack: Stack, business: string, bytes = 8_000) {
  const callSid = newCallSid();
  const rec = await stack.emulator.createRecording({ call_sid: callSid, bytes });
  await stack.register({ businessId: business, callSid });
  return { callSid, recordingSid: rec.recording_sid as RecordingSid, size: rec.size, sha256: rec.sha256 };
}

describe('recgate purge', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack?.close());

  it('removes the local copy, marks the call, and the gateway on the data dir refuses later plays', async () => {
    const call = await recordedCall(stack, 'acme');
    const first = await play(stack, call.callSid, 'acme');
    assert.equal(first.status, 200);
    assert.equal(sha256(first.bytes), call.sha256);
    const dir = path.join(stack.dataDir, 'recordings');
    assert.deepEqual(await settledFiles(dir, call.callSid), finishedNames(call.callSid));
    const fetched = stack.emulator.stats().total_media_requests;

    const purged = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(purged.code, 0, purged.err);
    assert.equal(
      purged.out,
      `removed 7.8 KiB (${call.size} bytes) of ${call.recordingSid}\nmarked 1 call purged\n`,
    );
    assert.deepEqual(
      (await callFiles(dir, call.callSid)).filter((n) => !n.endsWith('.lock')),
      [],
    );
    const refused = await play(stack, call.callSid, 'acme');
    assert.equal(refused.status, 410);
    assert.equal(JSON.parse(refused.bytes.toString()).error.code, 'RECGATE_RECORDING_PURGED');
    assert.equal(stack.emulator.stats().total_media_requests, fetched, 'nothing was fetched again');

    const again = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(again.code, 0, again.err);
    assert.equal(again.out, `removed nothing: no local copy of ${call.recordingSid}\nmarked 1 call purged\n`);
  });

  it('exits 1 naming an unknown call, and 2 for bad usage', async () => {
    const unknown = newCallSid();
    const missing = await recgate(stack, ['purge', '--call', unknown]);
    assert.equal(missing.code, 1);
    assert.equal(missing.out, '');
    assert.match(missing.err, new RegExp(`no call ${unknown} in the call log`));

    const bad = await recgate(stack, ['purge', '--call', 'CA123']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--call must be a call SID/);
    const none = await recgate(stack, ['purge']);
    assert.equal(none.code, 2);
    assert.match(none.err, /required option '--call <sid>'/);
  });
});
