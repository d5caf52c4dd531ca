/**
 * What the embedding suites share: an emulator with recordings of two businesses, recgate options pointing
 * at it, and requests that compare answers byte for byte.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { request } from 'undici';
import type { Recgate } from '../../src/embed/recgate.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import type { RecgateOptions } from '../../src/index.js';
import { hex32, readAll, sha256, tempDir } from '../helpers/common.js';
import { JWT_SECRET } from '../helpers/stack.js';

export interface Recorded {
  callSid: string;
  size: number;
  sha256: string;
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An emulator, closed after the test's suite. */
export async function emulatorFor(t: { after(fn: () => unknown): void }): Promise<Emulator> {
  const emulator = await startEmulator({ port: 0, logger: false });
  t.after(() => emulator.close());
  return emulator;
}

/** Options for an embedded recgate against `emulator`, in a temporary data dir, reading no environment. */
export function optionsFor<Req extends IncomingMessage>(
  t: { after(fn: () => unknown): void },
  emulator: Emulator,
  extra: RecgateOptions<Req> = {},
): RecgateOptions<Req> {
  return {
    jwtSecret: JWT_SECRET,
    twilio: { accountSid: emulator.accountSid, authToken: emulator.authToken, apiBase: emulator.url },
    dataDir: tempDir(t, 'recgate-embed-'),
    logLevel: 'silent',
    env: {},
    ...extra,
  };
}

/** A completed recording at the emulator, registered to `businessId`. */
export async function recordedCall(
  emulator: Emulator,
  recgate: Pick<Recgate, 'registerCall'>,
  businessId: string,
  bytes = 8_000,
): Promise<Recorded> {
  const callSid = `CA${hex32()}`;
  const res = await fetch(`${emulator.url}/__emulator/recordings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ call_sid: callSid, bytes }),
  });
  assert.equal(res.status, 201);
  const made = (await res.json()) as { size: number; sha256: string };
  await recgate.registerCall({ callSid, businessId });
  return { callSid, size: made.size, sha256: made.sha256 };
}

export async function get(
  url: string,
  init: { method?: 'GET' | 'HEAD' | 'POST' | 'DELETE'; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await request(url, { method: init.method ?? 'GET', headers: init.headers ?? {} });
  return { status: res.statusCode, headers: res.headers, body: await readAll(res.body) };
}

/** The error code of a JSON error answer. */
export function codeOf(answer: Answer): string {
  return (JSON.parse(answer.body.toString()) as { error: { code: string } }).error.code;
}

/** Two answers are the same bytes: status, body and every header but the date and the request id. */
export function assertSameAnswer(a: Answer, b: Answer): void {
  const strip = ({ date: _d, 'x-request-id': _r, ...rest }: Answer['headers']) => rest;
  assert.equal(a.status, b.status);
  assert.deepEqual(strip(a.headers), strip(b.headers));
  assert.deepEqual(a.body, b.body);
}

/**
 * What every host app must show, however it mounts recgate: the whole recording, a Range, "not yours"
 * answered as "does not exist", and a playback URL under the mount that plays with no other credential.
 * `as(business)` gives the headers that authenticate as that business in the host's own scheme.
 */
export async function playsRecordings(options: {
  base: string;
  prefix: string;
  emulator: Emulator;
  recgate: Pick<Recgate, 'registerCall'>;
  as: (businessId: string) => Record<string, string>;
}): Promise<void> {
  const { base, prefix, emulator, recgate, as } = options;
  const mine = await recordedCall(emulator, recgate, 'biz-a');
  const theirs = await recordedCall(emulator, recgate, 'biz-b');
  const download = (sid: string) => `${base}${prefix}/api/calls/${sid}/download`;

  const whole = await get(download(mine.callSid), { headers: as('biz-a') });
  assert.equal(whole.status, 200);
  assert.equal(whole.headers['content-type'], 'audio/mpeg');
  assert.equal(sha256(whole.body), mine.sha256);

  const range = await get(download(mine.callSid), { headers: { ...as('biz-a'), range: 'bytes=100-1099' } });
  assert.equal(range.status, 206);
  assert.equal(range.headers['content-range'], `bytes 100-1099/${mine.size}`);
  assert.deepEqual(range.body, whole.body.subarray(100, 1100));
  const suffix = await get(download(mine.callSid), { headers: { ...as('biz-a'), range: 'bytes=-500' } });
  assert.deepEqual(suffix.body, whole.body.subarray(whole.body.length - 500));

  const notMine = await get(download(theirs.callSid), { headers: as('biz-a') });
  const unknown = await get(download(`CA${hex32()}`), { headers: as('biz-a') });
  assert.equal(notMine.status, 404);
  assert.equal(codeOf(notMine), 'RECGATE_NOT_FOUND');
  assertSameAnswer(notMine, unknown);

  const anonymous = await get(download(mine.callSid));
  assert.equal(anonymous.status, 401);
  assert.equal(codeOf(anonymous), 'RECGATE_UNAUTHENTICATED');

  const issued = await get(`${base}${prefix}/api/calls/${mine.callSid}/playback-url`, {
    method: 'POST',
    headers: as('biz-a'),
  });
  assert.equal(issued.status, 200);
  const { url } = JSON.parse(issued.body.toString()) as { url: string };
  assert.ok(url.startsWith(`${download(mine.callSid)}?`), `${url} is under ${prefix}`);
  const played = await get(url);
  assert.equal(played.status, 200);
  assert.equal(sha256(played.body), mine.sha256);

  const list = await get(`${base}${prefix}/api/calls`, { headers: as('biz-a') });
  assert.equal(list.status, 200);
  const sids = (JSON.parse(list.body.toString()) as { calls: Array<{ call_sid: string }> }).calls.map(
    (c) => c.call_sid,
  );
  assert.deepEqual(sids, [mine.callSid]);
}
