/**
 * Running the admin commands (`recgate purge`, `prefetch`, `stats`) in a child process as an operator runs them
 * beside a gateway stack (test/helpers/stack.ts), and the fixtures their tests share.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { recgateArgs } from './recgate-command.js';
import { JWT_SECRET, type Stack } from './stack.js';

export const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

export interface Outcome {
  code: number;
  out: string;
  err: string;
}

/** Runs `recgate …` (see recgate-command.ts); async, so the in-process emulator and gateway keep answering. */
export async function recgate(
  stack: Stack,
  args: string[],
  env: Record<string, string> = {},
): Promise<Outcome> {
  const clean: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(clean)) if (/^(RECGATE_|TWILIO_)/.test(name)) delete clean[name];
  Object.assign(clean, commandEnv(stack), env);
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [...recgateArgs(), ...args], {
      env: clean,
      timeout: 60_000,
    });
    return { code: 0, out: stdout, err: stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    assert.equal(typeof e.code, 'number', `recgate did not exit: ${e.stderr}`);
    return { code: e.code!, out: e.stdout ?? '', err: e.stderr ?? '' };
  }
}

export async function play(stack: Stack, callSid: string, business: string) {
  const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
    headers: { authorization: `Bearer ${await stack.token(business)}` },
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, bytes };
}

/** A call at the emulator with one recording of `bytes`, registered to `business`. */
export async function recordedCall(stack: Stack, business: string, bytes = 8_000) {
  const callSid = newCallSid();
  const rec = await stack.emulator.createRecording({ call_sid: callSid, bytes });
  await stack.register({ businessId: business, callSid });
  return { callSid, recordingSid: rec.recording_sid as RecordingSid, size: rec.size, sha256: rec.sha256 };
}

/** Deletes a recording at the emulator, as Twilio's DELETE does. */
export async function deleteAtTwilio(stack: Stack, recordingSid: string): Promise<void> {
  const auth = Buffer.from(`${stack.emulator.accountSid}:${stack.emulator.authToken}`).toString('base64');
  const res = await request(
    `${stack.emulator.url}/2010-04-01/Accounts/${stack.emulator.accountSid}/Recordings/${recordingSid}.json`,
    { method: 'DELETE', headers: { authorization: `Basic ${auth}` } },
  );
  await res.body.dump();
  assert.equal(res.statusCode, 204);
}

export function mediaRequests(stack: Stack, sid: string): number {
  return stack.emulator.stats().media_requests[sid] ?? 0;
}

/** The environment the commands get: the stack's Twilio and data dir, as an operator's shell would have. */
export function commandEnv(stack: Stack): Record<string, string> {
  return {
    RECGATE_JWT_SECRET: JWT_SECRET,
    TWILIO_ACCOUNT_SID: stack.emulator.accountSid,
    TWILIO_AUTH_TOKEN: stack.emulator.authToken,
    TWILIO_API_BASE: stack.emulator.url,
    RECGATE_DATA_DIR: stack.dataDir,
  };
}
