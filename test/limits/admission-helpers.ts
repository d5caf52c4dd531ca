/** What the upstream-admission tests share: a stack, cold calls per business, requests and /metrics. */
import assert from 'node:assert/strict';
import { request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import type { Stack } from '../helpers/stack.js';

export interface Cold {
  callSid: string;
  recordingSid: string;
  size: number;
}

/** A recording at the emulator, registered in the call log for `business` (its recording SID known). */
export async function coldCall(stack: Stack, business: string, bytes = 4000): Promise<Cold> {
  const rec = await stack.emulator.createRecording({ bytes });
  await stack.register({
    businessId: business,
    callSid: rec.call_sid as CallSid,
    recordingSid: rec.recording_sid as RecordingSid,
    startedAt: new Date().toISOString(),
  });
  return { callSid: rec.call_sid, recordingSid: rec.recording_sid!, size: rec.size };
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A download request; `signal` lets the test close the client. */
export async function download(
  stack: Stack,
  token: string,
  callSid: string,
  options: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Answer> {
  const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
    method: options.method ?? 'GET',
    headers: { authorization: `Bearer ${token}`, ...options.headers },
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

export function assertError(res: Answer, status: number, code: string): void {
  assert.equal(res.status, status, res.body.toString());
  assert.equal(JSON.parse(res.body.toString()).error.code, code);
}

export { until } from '../helpers/common.js';
export { metric } from '../helpers/metrics.js';
