/**
 * What the takeover fault tests (lock-session, gateway-killed) share: a cold recording registered with a
 * gateway, clients that tell a complete body from a cut one, the files a call leaves in the recordings
 * directory, and the cache events the gateways logged for it.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Dispatcher, request } from 'undici';
import { type Emulator, generateMp3 } from '../../src/emulator/index.js';
import { sha256 } from '../helpers/common.js';
import { callFiles, settledFiles } from '../helpers/recordings.js';
import { ADMIN_TOKEN } from '../helpers/stack.js';
import { between } from './seed.js';

export { sha256 } from '../helpers/common.js';

export interface ColdRecording {
  callSid: string;
  recordingSid: string;
  size: number;
  sha256: string;
  /** The recording's bytes, as the emulator serves them. */
  source: Buffer;
}

/**
 * Creates a recording at the emulator and registers its call for business `acme` through `gatewayUrl`. The
 * SIDs are random, not the emulator's sequence (the same in every emulator): PostgreSQL advisory locks are
 * keyed by call SID across the whole database, so test runs sharing a server must not share SIDs.
 */
export async function coldRecording(
  emulator: Emulator,
  gatewayUrl: string,
  bytes: number,
): Promise<ColdRecording> {
  const rec = await emulator.createRecording({
    bytes,
    call_sid: `CA${randomBytes(16).toString('hex')}`,
    recording_sid: `RE${randomBytes(16).toString('hex')}`,
  });
  const res = await request(`${gatewayUrl}/api/admin/calls/${rec.call_sid}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ business_id: 'acme', recording_sid: rec.recording_sid }),
  });
  await res.body.dump();
  if (res.statusCode !== 201) throw new Error(`registering ${rec.call_sid} answered ${res.statusCode}`);
  // The emulator's media is generateMp3 seeded with the recording SID; no need to download it (throttled).
  const source = generateMp3({ seed: rec.recording_sid!, bytes }).data;
  if (sha256(source) !== rec.sha256) throw new Error('the generated media differs from the emulator');
  return {
    callSid: rec.call_sid,
    recordingSid: rec.recording_sid!,
    size: rec.size,
    sha256: rec.sha256!,
    source,
  };
}

/** One client's request: the whole recording, or one range of it. */
export interface ClientPlan {
  kind: 'full' | 'open' | 'range' | 'suffix';
  /** The Range header, if any. */
  range: string | undefined;
  /** First and last byte the response must carry. */
  start: number;
  end: number;
}

/**
 * `n` client requests, from `random`: mostly whole recordings (plain GETs and `bytes=0-`), and ranges of
 * 64 KiB to 256 KiB anywhere in the file and suffixes, which may wait on (or trigger) seek-ahead slices.
 */
export function planClients(random: () => number, size: number, n: number): ClientPlan[] {
  return Array.from({ length: n }, (_, i): ClientPlan => {
    const pick =
      i % 4 === 0 ? 'full' : (['full', 'open', 'range', 'suffix'] as const)[between(random, 0, 3)]!;
    if (pick === 'open') return { kind: pick, range: 'bytes=0-', start: 0, end: size - 1 };
    if (pick === 'range') {
      const length = between(random, 64 * 1024, 256 * 1024);
      const start = between(random, 0, size - length);
      return { kind: pick, range: `bytes=${start}-${start + length - 1}`, start, end: start + length - 1 };
    }
    if (pick === 'suffix') {
      const length = between(random, 1, 128 * 1024);
      return { kind: pick, range: `bytes=-${length}`, start: size - length, end: size - 1 };
    }
    return wholeRecording(size);
  });
}

/**
 * A short range near the end, for a client that comes once the download is under way (its rate measured):
 * far enough beyond the frontier that the gateway may fetch it with a seek-ahead slice, whose bytes a
 * takeover must carry over.
 */
export function seekerPlan(random: () => number, size: number): ClientPlan {
  const length = between(random, 16 * 1024, 64 * 1024);
  const start = between(random, Math.floor(size * 0.85), Math.floor(size * 0.95) - length);
  return { kind: 'range', range: `bytes=${start}-${start + length - 1}`, start, end: start + length - 1 };
}

/** The plain GET of the whole recording. */
export function wholeRecording(size: number): ClientPlan {
  return { kind: 'full', range: undefined, start: 0, end: size - 1 };
}

export const describePlan = (p: ClientPlan): string => (p.range === undefined ? 'GET' : p.range);

/**
 * - `complete`: the status, Content-Length and every byte are right;
 * - `cut`: the body errored or ended short of its Content-Length, and every byte received was right;
 * - `refused`: an error status before any body (503 RECGATE_LOCK_LOST, say);
 * - `wrong`: anything else: a wrong byte, a wrong length that looked complete, an unexpected status.
 */
export type Verdict = 'complete' | 'cut' | 'refused' | 'wrong';

export interface ClientResult {
  plan: ClientPlan;
  verdict: Verdict;
  status: number;
  /** Body bytes received. */
  received: number;
  /** What went wrong, for `cut`, `refused` and `wrong`. */
  detail?: string;
}

/** One GET of the call's recording through `gatewayUrl`, judged against `source`. Never rejects. */
export async function fetchRecording(
  gatewayUrl: string,
  callSid: string,
  token: string,
  plan: ClientPlan,
  source: Buffer,
  dispatcher: Dispatcher,
): Promise<ClientResult> {
  const expected = source.subarray(plan.start, plan.end + 1);
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (plan.range !== undefined) headers.range = plan.range;
  let status = 0;
  let declared: number | undefined;
  const chunks: Buffer[] = [];
  let received = 0;
  let failure: string | undefined;
  try {
    const res = await request(`${gatewayUrl}/api/calls/${callSid}/download`, { dispatcher, headers });
    status = res.statusCode;
    const length = res.headers['content-length'];
    declared = typeof length === 'string' ? Number(length) : undefined;
    if (status !== 200 && status !== 206) {
      const text = await res.body.text().catch((err: unknown) => String(err));
      return {
        plan,
        verdict: status >= 500 ? 'refused' : 'wrong',
        status,
        received: 0,
        detail: text.slice(0, 200),
      };
    }
    try {
      for await (const chunk of res.body) {
        chunks.push(chunk as Buffer);
        received += (chunk as Buffer).byteLength;
      }
    } catch (err) {
      failure = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
  } catch (err) {
    // No response at all (the connection died before the headers): nothing was claimed to be complete.
    return { plan, verdict: 'cut', status, received: 0, detail: `no response: ${String(err)}` };
  }
  const body = Buffer.concat(chunks);
  const wantStatus = plan.range === undefined ? 200 : 206;
  if (status !== wantStatus) return { plan, verdict: 'wrong', status, received, detail: `status ${status}` };
  if (declared !== undefined && declared !== expected.length) {
    return {
      plan,
      verdict: 'wrong',
      status,
      received,
      detail: `Content-Length ${declared}, want ${expected.length}`,
    };
  }
  if (!body.equals(expected.subarray(0, body.length))) {
    return { plan, verdict: 'wrong', status, received, detail: 'the bytes differ from the recording' };
  }
  if (failure !== undefined) return { plan, verdict: 'cut', status, received, detail: failure };
  if (body.length < expected.length) {
    return {
      plan,
      verdict: 'cut',
      status,
      received,
      detail: `ended at ${body.length} of ${expected.length}`,
    };
  }
  if (body.length > expected.length) {
    return {
      plan,
      verdict: 'wrong',
      status,
      received,
      detail: `${body.length} bytes, want ${expected.length}`,
    };
  }
  return { plan, verdict: 'complete', status, received };
}

/** `{complete: n, cut: n, …}` over `results`. */
export function tally(results: ClientResult[]): Record<Verdict, number> {
  const counts: Record<Verdict, number> = { complete: 0, cut: 0, refused: 0, wrong: 0 };
  for (const r of results) counts[r.verdict]++;
  return counts;
}

/**
 * Waits (up to `timeoutMs`) until the call's files are exactly the finished recording and its identity
 * record (plus the lock file when `allowLockFile`), then checks them: the recording's bytes, and a record
 * naming its recording SID. Resolves to the names seen last and what is wrong with them, if anything.
 */
export async function settledRecording(
  dir: string,
  rec: ColdRecording,
  options: { timeoutMs?: number; allowLockFile?: boolean } = {},
): Promise<{ names: string[]; problem: string | undefined }> {
  let names: string[];
  try {
    names = await settledFiles(dir, rec.callSid, {
      timeoutMs: options.timeoutMs ?? 15_000,
      ...(options.allowLockFile ? { lockFileAfterMs: 0 } : {}),
    });
  } catch (err) {
    return { names: await callFiles(dir, rec.callSid), problem: (err as Error).message };
  }
  const body = await readFile(path.join(dir, `${rec.callSid}.mp3`));
  if (sha256(body) !== rec.sha256) {
    return { names, problem: `${rec.callSid}.mp3 is not the recording (${body.length} bytes)` };
  }
  const record = JSON.parse(await readFile(path.join(dir, `.${rec.callSid}.mp3.id`), 'utf8')) as {
    recordingSid?: unknown;
  };
  if (record.recordingSid !== rec.recordingSid) {
    return {
      names,
      problem: `the identity record names ${String(record.recordingSid)}, not ${rec.recordingSid}`,
    };
  }
  return { names, problem: undefined };
}

/** The cache events a gateway logged for one call, in order. */
export function callEvents(
  logs: Array<Record<string, unknown>>,
  callSid: string,
): Array<Record<string, unknown>> {
  return logs.filter((l) => l.callSid === callSid && typeof l.event === 'string');
}

/** `event` names with counts, and `download_failed` split by code: a compact line for diagnostics. */
export function eventSummary(events: Array<Record<string, unknown>>): string {
  const counts = new Map<string, number>();
  for (const e of events) {
    const name = e.event === 'download_failed' ? `download_failed(${String(e.code)})` : String(e.event);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts].map(([name, n]) => `${name}×${n}`).join(' ') || 'none';
}

/** Polls `probe` every `intervalMs` until it returns a value other than `undefined`; throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
  intervalMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Media bytes the emulator has sent of `recordingSid` since its last reset (slices and cut bodies count). */
export const mediaSent = (emulator: Emulator, recordingSid: string): number =>
  emulator.stats().media_bytes[recordingSid] ?? 0;

/** Runs each mark's action once the emulator has sent `at` media bytes of the recording, in order of `at`. */
export async function atMediaBytes(
  emulator: Emulator,
  recordingSid: string,
  marks: Array<{ at: number; run: () => unknown }>,
): Promise<void> {
  for (const mark of [...marks].sort((a, b) => a.at - b.at)) {
    await waitFor(`${mark.at} media bytes`, () =>
      mediaSent(emulator, recordingSid) >= mark.at ? true : undefined,
    );
    await mark.run();
  }
}

/** Whether the gateway at `url` answers /readyz with 200. */
export async function ready(url: string): Promise<boolean> {
  try {
    const res = await request(`${url}/readyz`);
    await res.body.dump();
    return res.statusCode === 200;
  } catch {
    return false;
  }
}
