/**
 * What the call log backends share: input validation, timestamp normalisation, the page cursor and the
 * mapping from a `calls` row to a {@link CallRecord}. Each backend keeps only its SQL and driver handling.
 */
import { createError, isRecgateError, type RecgateError } from '../errors.js';
import { type CallSid, isCallSid, isRecordingSid, parseCallSid, type RecordingSid } from '../sid.js';
import {
  type CallRecord,
  type CallUpsert,
  MAX_BUSINESSES_OF,
  type PlayPage,
  type PlayRecord,
  type RecordingResolution,
  type RecordingState,
} from './call-log.js';

/** Largest page {@link CallLog.list} returns. */
export const MAX_PAGE_SIZE = 200;

/** Longest business id accepted; ids come from JWT claims and admin requests. */
export const MAX_BUSINESS_ID_LENGTH = 256;

/** Longest free-text field (direction, from, to) accepted. */
const MAX_TEXT_LENGTH = 256;

export const RECORDING_STATES: readonly RecordingState[] = [
  'unknown',
  'available',
  'processing',
  'absent',
  'deleted',
];

/** A field of an update: `set` is false when the caller left it out, so the stored value stays. */
export interface Field<T> {
  set: boolean;
  value: T | null;
}

export interface NormalizedUpsert {
  businessId: string;
  callSid: CallSid;
  parentCallSid: Field<CallSid>;
  recordingSid: Field<RecordingSid>;
  direction: Field<string>;
  from: Field<string>;
  to: Field<string>;
  /** Canonical UTC ISO 8601 (`YYYY-MM-DDTHH:MM:SS.sssZ`), so text comparison sorts by time. */
  startedAt: Field<string>;
  durationS: Field<number>;
}

export interface NormalizedResolution {
  recordingState: RecordingState;
  recordingSid: Field<RecordingSid>;
  recordingOwnerCallSid: Field<CallSid>;
  recordingSize: Field<number>;
  recordingDurationS: Field<number>;
  recordingStatus: Field<string>;
}

/** The sort key of a row: the last row of a page, encoded in the cursor. */
export interface SortKey {
  startedAt: string | null;
  createdAt: string;
  callSid: CallSid;
}

/** A `calls` row as either driver returns it; timestamps come back as text (SQLite) or Date (pg). */
export interface CallRow {
  business_id: string;
  call_sid: string;
  parent_call_sid: string | null;
  recording_sid: string | null;
  recording_owner_call_sid: string | null;
  recording_state: string;
  recording_size: number | string | null;
  recording_duration_s: number | null;
  direction: string | null;
  from_number: string | null;
  to_number: string | null;
  started_at: string | Date | null;
  duration_s: number | null;
  purged_at: string | Date | null;
  recording_status: string | null;
  created_at: string | Date;
  updated_at: string | Date;
}

/** A `plays` row as either driver returns it (pg gives bigint columns as strings). */
export interface PlayRow {
  id: number | string;
  played_at: string | Date;
  business_id: string;
  call_sid: string;
  recording_sid: string;
  bytes: number | string;
  status: number;
  request_id: string;
}

/** A row of `CallLog.businessesOf`'s query. */
export interface BusinessRow {
  call_sid: string;
  business_id: string;
}

function invalid(message: string): RecgateError {
  return createError('RECGATE_INVALID_REQUEST', { message });
}

/** Wraps a driver failure; the SQL and driver message stay in `cause`, for the logs only. */
export function databaseError(cause: unknown): RecgateError {
  if (isRecgateError(cause)) return cause;
  return createError('RECGATE_DATABASE_ERROR', { cause });
}

export function requireBusinessId(value: unknown, field = 'businessId'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_BUSINESS_ID_LENGTH) {
    throw invalid(`${field} must be a non-empty string of at most ${MAX_BUSINESS_ID_LENGTH} characters`);
  }
  return value;
}

export function requireCallSid(value: unknown): CallSid {
  return parseCallSid(value);
}

/** Validates a `CallLog.businessesOf` argument and drops repeats. */
export function requireCallSids(value: unknown): CallSid[] {
  if (!Array.isArray(value) || value.length > MAX_BUSINESSES_OF) {
    throw invalid(`callSids must be an array of at most ${MAX_BUSINESSES_OF} call SIDs`);
  }
  return [...new Set(value.map(requireCallSid))];
}

export function requireRecordingSid(value: unknown): RecordingSid {
  if (!isRecordingSid(value)) throw invalid('recordingSid must match ^RE[0-9a-f]{32}$');
  return value;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/i;
/** Twilio's REST API writes times as RFC 2822, e.g. `Tue, 10 Aug 2010 08:02:17 +0000`. */
const RFC_2822 = /^(?:[A-Z][a-z]{2}, )?\d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} (?:[+-]\d{4}|GMT|UTC)$/;
const CANONICAL = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Normalises a timestamp to canonical UTC ISO 8601 with milliseconds. Only forms with an explicit zone
 * are accepted (ISO 8601 with `Z` or an offset, or RFC 2822 as Twilio writes it): a zone-less time would
 * be read in the server's local zone and sort differently on another host.
 */
export function normalizeTimestamp(value: unknown, field: string): string {
  const message = `${field} must be an ISO 8601 timestamp with a zone (e.g. 2024-05-01T12:00:00Z)`;
  if (typeof value !== 'string' || !(ISO_8601.test(value) || RFC_2822.test(value))) throw invalid(message);
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw invalid(message);
  const iso = new Date(ms).toISOString();
  // Years outside 0000..9999 print as ±YYYYYY and would break text ordering.
  if (!CANONICAL.test(iso)) throw invalid(message);
  return iso;
}

function isCanonicalTimestamp(value: unknown): value is string {
  return (
    typeof value === 'string' && CANONICAL.test(value) && new Date(Date.parse(value)).toISOString() === value
  );
}

function optional<T>(input: object, key: string, check: (value: unknown) => T): Field<T> {
  if (!Object.hasOwn(input, key)) return { set: false, value: null };
  const value = (input as Record<string, unknown>)[key];
  if (value === undefined) return { set: false, value: null };
  if (value === null) return { set: true, value: null };
  return { set: true, value: check(value) };
}

function text(field: string): (value: unknown) => string {
  return (value) => {
    if (typeof value !== 'string' || value.length > MAX_TEXT_LENGTH) {
      throw invalid(`${field} must be a string of at most ${MAX_TEXT_LENGTH} characters, or null`);
    }
    return value;
  };
}

function nonNegative(field: string, integer: boolean): (value: unknown) => number {
  return (value) => {
    const ok =
      typeof value === 'number' &&
      Number.isFinite(value) &&
      value >= 0 &&
      (!integer || Number.isSafeInteger(value));
    if (!ok) throw invalid(`${field} must be a non-negative ${integer ? 'integer' : 'number'}, or null`);
    return value as number;
  };
}

function callSidField(field: string): (value: unknown) => CallSid {
  return (value) => {
    if (!isCallSid(value)) throw invalid(`${field} must match ^CA[0-9a-f]{32}$, or be null`);
    return value;
  };
}

function recordingSidField(field: string): (value: unknown) => RecordingSid {
  return (value) => {
    if (!isRecordingSid(value)) throw invalid(`${field} must match ^RE[0-9a-f]{32}$, or be null`);
    return value;
  };
}

export function normalizeUpsert(input: CallUpsert): NormalizedUpsert {
  if (typeof input !== 'object' || input === null) throw invalid('call must be an object');
  const callSid = requireCallSid(input.callSid);
  const parentCallSid = optional(input, 'parentCallSid', callSidField('parentCallSid'));
  if (parentCallSid.value === callSid) throw invalid('parentCallSid must differ from callSid');
  return {
    businessId: requireBusinessId(input.businessId),
    callSid,
    parentCallSid,
    recordingSid: optional(input, 'recordingSid', recordingSidField('recordingSid')),
    direction: optional(input, 'direction', text('direction')),
    from: optional(input, 'from', text('from')),
    to: optional(input, 'to', text('to')),
    startedAt: optional(input, 'startedAt', (value) => normalizeTimestamp(value, 'startedAt')),
    durationS: optional(input, 'durationS', nonNegative('durationS', false)),
  };
}

export function normalizeResolution(resolution: RecordingResolution): NormalizedResolution {
  if (typeof resolution !== 'object' || resolution === null) throw invalid('resolution must be an object');
  if (!RECORDING_STATES.includes(resolution.recordingState)) {
    throw invalid(`recordingState must be one of ${RECORDING_STATES.join(', ')}`);
  }
  return {
    recordingState: resolution.recordingState,
    recordingSid: optional(resolution, 'recordingSid', recordingSidField('recordingSid')),
    recordingOwnerCallSid: optional(
      resolution,
      'recordingOwnerCallSid',
      callSidField('recordingOwnerCallSid'),
    ),
    recordingSize: optional(resolution, 'recordingSize', nonNegative('recordingSize', true)),
    recordingDurationS: optional(resolution, 'recordingDurationS', nonNegative('recordingDurationS', false)),
    recordingStatus: optional(resolution, 'recordingStatus', (value) => {
      if (typeof value !== 'string' || !/^[a-z-]{1,32}$/.test(value)) {
        throw invalid(
          'recordingStatus must be a Twilio recording status (lower-case letters and -), or null',
        );
      }
      return value;
    }),
  };
}

export function parseLimit(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_PAGE_SIZE) {
    throw invalid(`limit must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  }
  return value;
}

/** The cursor is base64url JSON of the last row's sort key; opaque to clients, checked on the way in. */
export function encodeCursor(key: SortKey): string {
  return Buffer.from(JSON.stringify([key.startedAt, key.createdAt, key.callSid])).toString('base64url');
}

const MAX_CURSOR_LENGTH = 512;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function decodeCursor(cursor: unknown): SortKey {
  const bad = () => invalid('cursor is malformed; pass nextCursor from a previous page unchanged');
  if (typeof cursor !== 'string' || cursor.length > MAX_CURSOR_LENGTH || !BASE64URL.test(cursor)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) throw bad();
  const [startedAt, createdAt, callSid] = parsed as unknown[];
  if (!(startedAt === null || isCanonicalTimestamp(startedAt))) throw bad();
  if (!isCanonicalTimestamp(createdAt) || !isCallSid(callSid)) throw bad();
  return { startedAt, createdAt, callSid };
}

function timestamp(value: string | Date): string {
  return value instanceof Date ? value.toISOString() : value;
}

export function rowToRecord(row: CallRow): CallRecord {
  return {
    businessId: row.business_id,
    callSid: row.call_sid as CallSid,
    parentCallSid: row.parent_call_sid as CallSid | null,
    recordingSid: row.recording_sid as RecordingSid | null,
    recordingOwnerCallSid: row.recording_owner_call_sid as CallSid | null,
    recordingState: row.recording_state as RecordingState,
    // pg returns bigint columns as strings; sizes stay far below 2^53.
    recordingSize: row.recording_size === null ? null : Number(row.recording_size),
    recordingDurationS: row.recording_duration_s,
    direction: row.direction,
    from: row.from_number,
    to: row.to_number,
    startedAt: row.started_at === null ? null : timestamp(row.started_at),
    durationS: row.duration_s,
    purgedAt: row.purged_at === null ? null : timestamp(row.purged_at),
    recordingStatus: row.recording_status,
    createdAt: timestamp(row.created_at),
    updatedAt: timestamp(row.updated_at),
  };
}

export function sortKey(record: CallRecord): SortKey {
  return { startedAt: record.startedAt, createdAt: record.createdAt, callSid: record.callSid };
}

/** The resolution an upsert stores when it sets `recordingSid` to a new value. */
export function resolutionForNewRecording(
  callSid: CallSid,
  recordingSid: RecordingSid | null,
): { state: RecordingState; owner: CallSid | null } {
  return recordingSid === null ? { state: 'unknown', owner: null } : { state: 'available', owner: callSid };
}

/** Builds a page from `limit + 1` fetched rows: the extra row only says whether another page exists. */
export function toPage(rows: CallRow[], limit: number): { calls: CallRecord[]; nextCursor: string | null } {
  const calls = rows.slice(0, limit).map(rowToRecord);
  const last = calls.at(-1);
  return { calls, nextCursor: rows.length > limit && last ? encodeCursor(sortKey(last)) : null };
}

/** Longest request id a play records (the gateway's own are UUIDs; a client's `X-Request-Id` is at most 64). */
const MAX_REQUEST_ID_LENGTH = 128;

/** Checks a play before it is written; the values come from the gateway, so a bad one is a bug: refuse it. */
export function normalizePlay(play: PlayRecord): PlayRecord {
  if (!isCanonicalTimestamp(play.playedAt)) throw invalid('playedAt must be a canonical UTC ISO 8601 time');
  requireBusinessId(play.businessId);
  requireCallSid(play.callSid);
  requireRecordingSid(play.recordingSid);
  if (!Number.isSafeInteger(play.bytes) || play.bytes < 0)
    throw invalid('bytes must be a non-negative integer');
  if (!Number.isInteger(play.status) || play.status < 100 || play.status > 599) {
    throw invalid('status must be an HTTP status');
  }
  if (typeof play.requestId !== 'string' || play.requestId.length > MAX_REQUEST_ID_LENGTH) {
    throw invalid(`requestId must be a string of at most ${MAX_REQUEST_ID_LENGTH} characters`);
  }
  return play;
}

/** The plays cursor is base64url of the last row's id: plays are paged by their id, newest first. */
export function decodePlayCursor(cursor: unknown): number {
  const bad = () => invalid('cursor is malformed; pass nextCursor from a previous page unchanged');
  if (typeof cursor !== 'string' || cursor.length > 32 || !BASE64URL.test(cursor)) throw bad();
  const id = Number(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!Number.isSafeInteger(id) || id < 1) throw bad();
  return id;
}

/** Builds a page of plays from `limit + 1` rows, newest first. */
export function toPlayPage(rows: PlayRow[], limit: number): PlayPage {
  const page = rows.slice(0, limit);
  const plays = page.map(
    (row): PlayRecord => ({
      playedAt: timestamp(row.played_at),
      businessId: row.business_id,
      callSid: row.call_sid as CallSid,
      recordingSid: row.recording_sid as RecordingSid,
      bytes: Number(row.bytes),
      status: row.status,
      requestId: row.request_id,
    }),
  );
  const last = page.at(-1);
  const nextCursor = rows.length > limit && last ? Buffer.from(String(last.id)).toString('base64url') : null;
  return { plays, nextCursor };
}
