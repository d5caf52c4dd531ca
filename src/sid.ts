/**
 * Twilio SID validation. A SID is checked here before it touches a file path, a SQL query or an upstream URL.
 * Twilio writes SIDs as a two-letter upper-case prefix and 32 lower-case hex digits; anything else
 * (other case, other length, encoded slashes, NUL bytes, look-alike Unicode) is rejected.
 */
import { createError } from './errors.js';

/** The patterns, for messages and for code that matches SIDs inside longer strings (the emulator's paths). */
export const CALL_SID_PATTERN = 'CA[0-9a-f]{32}';
export const RECORDING_SID_PATTERN = 'RE[0-9a-f]{32}';
export const ACCOUNT_SID_PATTERN = 'AC[0-9a-f]{32}';

const CALL_SID = new RegExp(`^${CALL_SID_PATTERN}$`);
const RECORDING_SID = new RegExp(`^${RECORDING_SID_PATTERN}$`);
const ACCOUNT_SID = new RegExp(`^${ACCOUNT_SID_PATTERN}$`);

export type CallSid = string & { readonly __brand: 'CallSid' };
export type RecordingSid = string & { readonly __brand: 'RecordingSid' };

export function isCallSid(value: unknown): value is CallSid {
  return typeof value === 'string' && CALL_SID.test(value);
}

export function isRecordingSid(value: unknown): value is RecordingSid {
  return typeof value === 'string' && RECORDING_SID.test(value);
}

export function isAccountSid(value: unknown): value is string {
  return typeof value === 'string' && ACCOUNT_SID.test(value);
}

/** Returns the value as a CallSid or throws RECGATE_INVALID_CALL_SID (400). */
export function parseCallSid(value: unknown): CallSid {
  if (!isCallSid(value)) throw createError('RECGATE_INVALID_CALL_SID');
  return value;
}

/** Returns the value as a RecordingSid or throws RECGATE_INVALID_REQUEST (400). */
export function parseRecordingSid(value: unknown): RecordingSid {
  if (!isRecordingSid(value)) {
    throw createError('RECGATE_INVALID_REQUEST', { message: 'recording_sid must match ^RE[0-9a-f]{32}$' });
  }
  return value;
}
