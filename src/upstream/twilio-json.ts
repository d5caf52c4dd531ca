/**
 * Twilio's JSON shapes: calls, recordings, pages of a recording list, and error bodies. A document that
 * does not have the shape recgate relies on is RECGATE_UPSTREAM_UNAVAILABLE, with what was wrong in `cause`;
 * an upstream body only ever reaches `cause`, never a client-visible message.
 */
import type { Readable } from 'node:stream';
import { createError, type RecgateError } from '../errors.js';
import { type CallSid, parseCallSid, parseRecordingSid, type RecordingSid } from '../sid.js';
import { discard } from './http-util.js';
import type { UpstreamCall, UpstreamRecording } from './upstream.js';

/** Twilio's JSON documents are small; this only protects memory from a misbehaving server. */
const MAX_JSON_BYTES = 8 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 4096;

/** What a non-success response said, for `cause` and the logs. */
export interface ErrorDetail {
  /** Twilio's numeric error code (20404 for "not found"), when the body was Twilio JSON. */
  twilioCode: number | null;
  /** Start of the body, for logs only. */
  snippet: string;
}

/** Reads a JSON body (at most 8 MiB). Throws RECGATE_UPSTREAM_UNAVAILABLE when it is larger or not JSON. */
export async function readJson(body: Readable): Promise<unknown> {
  return parseJson(await readLimited(body, MAX_JSON_BYTES, true));
}

/** Reads (and bounds) an error body for the logs; never fails. */
export async function readErrorDetail(body: Readable): Promise<ErrorDetail> {
  let snippet = '';
  try {
    snippet = await readLimited(body, MAX_ERROR_BODY_BYTES, false);
  } catch {
    return { twilioCode: null, snippet: '' };
  }
  let twilioCode: number | null = null;
  try {
    const code = (JSON.parse(snippet) as { code?: unknown }).code;
    if (typeof code === 'number') twilioCode = code;
  } catch {
    // Not JSON (a proxy's HTML page, a truncated body): the snippet alone goes to the logs.
  }
  return { twilioCode, snippet };
}

/** The `cause` of a failure that ends in a status: operation, status, Twilio code, and the body snippet. */
export function upstreamStatusError(
  operation: string,
  status: number,
  detail: ErrorDetail,
  note?: unknown,
): Error {
  const err = new Error(
    `${operation}: upstream answered ${status}` +
      (detail.twilioCode === null ? '' : ` (Twilio code ${detail.twilioCode})`) +
      (note === undefined ? '' : ` [${String(note)}]`),
  );
  Object.assign(err, { status, twilioCode: detail.twilioCode, body: detail.snippet });
  return err;
}

/** Reads a body as UTF-8 up to `limit` bytes; beyond that it throws (`strict`) or truncates. */
async function readLimited(body: Readable, limit: number, strict: boolean): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) {
      discard(body);
      if (strict) throw malformed(`response body larger than ${limit} bytes`);
      chunks.push(buf.subarray(0, buf.length - (size - limit)));
      break;
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
      cause: new Error('upstream answered invalid JSON', { cause: err }),
    });
  }
}

/** A response that is JSON but not the shape recgate relies on. */
export function malformed(what: string): RecgateError {
  return createError('RECGATE_UPSTREAM_UNAVAILABLE', {
    cause: new Error(`malformed upstream response: ${what}`),
  });
}

export function parseCall(json: unknown): UpstreamCall {
  if (typeof json !== 'object' || json === null) throw malformed('call is not an object');
  const o = json as Record<string, unknown>;
  const sid = o.sid;
  if (typeof sid !== 'string') throw malformed('call without a sid');
  const parent = o.parent_call_sid;
  return {
    sid: parseUpstreamCallSid(sid),
    parentCallSid: typeof parent === 'string' && parent !== '' ? parseUpstreamCallSid(parent) : null,
    direction: stringOrNull(o.direction),
    from: stringOrNull(o.from),
    to: stringOrNull(o.to),
    startTime: stringOrNull(o.start_time),
    durationS: durationOrNull(o.duration),
    status: stringOrNull(o.status),
  };
}

/** A recording; one without a `call_sid` (as in a call's list) belongs to `fallbackCallSid`. */
export function parseRecording(json: unknown, fallbackCallSid: CallSid | undefined): UpstreamRecording {
  if (typeof json !== 'object' || json === null) throw malformed('recording is not an object');
  const o = json as Record<string, unknown>;
  let sid: RecordingSid;
  try {
    sid = parseRecordingSid(o.sid);
  } catch {
    throw malformed('recording without a valid sid');
  }
  const callSid = typeof o.call_sid === 'string' ? parseUpstreamCallSid(o.call_sid) : fallbackCallSid;
  if (callSid === undefined) throw malformed(`recording ${sid} without a call_sid`);
  if (typeof o.status !== 'string') throw malformed(`recording ${sid} without a status`);
  return {
    sid,
    callSid,
    status: o.status,
    durationS: durationOrNull(o.duration),
    dateCreated: stringOrNull(o.date_created),
    ...(o.encryption_details === null || o.encryption_details === undefined
      ? {}
      : { encryptionDetails: o.encryption_details }),
  };
}

export interface RecordingPage {
  recordings: UpstreamRecording[];
  /** `next_page_uri` as Twilio gives it (relative to the base URL), or `null` on the last page. */
  nextPageUri: string | null;
}

/** One page of a call's recording list. */
export function parseRecordingPage(json: unknown, callSid: CallSid | undefined): RecordingPage {
  if (typeof json !== 'object' || json === null) throw malformed('recording list is not an object');
  const page = json as Record<string, unknown>;
  const items = page.recordings;
  if (!Array.isArray(items)) throw malformed('recording list without a recordings array');
  const next = page.next_page_uri;
  return {
    recordings: items.map((item) => parseRecording(item, callSid)),
    nextPageUri: typeof next === 'string' && next !== '' ? next : null,
  };
}

function parseUpstreamCallSid(value: string): CallSid {
  try {
    return parseCallSid(value);
  } catch {
    throw malformed('invalid call SID');
  }
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** Twilio sends durations as strings ("42"), and "-1" or null while a recording is in progress. */
function durationOrNull(value: unknown): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && value.trim() !== ''
        ? Number(value)
        : Number.NaN;
  return Number.isFinite(n) && n >= 0 ? n : null;
}
