/**
 * The call log: which business owns which call, how calls relate (parent/child legs), and what the
 * recording cache has learned about each call's recording.
 *
 * One interface, one file per backend beside it (`sqlite.ts`, `postgres.ts`). Code outside this folder
 * names only {@link CallLog}. `test/call-log/contract.ts` is the suite every backend must pass.
 */
import type { CallSid, RecordingSid } from '../sid.js';

/** What the recording resolver has found out about a call's recording. */
export type RecordingState =
  /** Nothing looked up yet. */
  | 'unknown'
  /** A completed recording exists; `recordingSid` and `recordingOwnerCallSid` say which and where. */
  | 'available'
  /** Twilio lists a recording that is still processing. */
  | 'processing'
  /** Neither the call nor its parent has a recording. */
  | 'absent'
  /** The recording was deleted upstream; terminal. */
  | 'deleted';

export interface CallRecord {
  businessId: string;
  callSid: CallSid;
  parentCallSid: CallSid | null;
  /** The recording to play for this call, once known (it may belong to the parent call). */
  recordingSid: RecordingSid | null;
  /** The call that owns `recordingSid`: this call or its parent. Names the file `{owner}.mp3`. */
  recordingOwnerCallSid: CallSid | null;
  recordingState: RecordingState;
  /** Recording size in bytes, once a download has told us. */
  recordingSize: number | null;
  /** Recording duration in seconds, if known. */
  recordingDurationS: number | null;
  direction: string | null;
  from: string | null;
  to: string | null;
  /** ISO 8601 timestamp of the call's start. */
  startedAt: string | null;
  /** Call duration in seconds. */
  durationS: number | null;
  /**
   * When an operator purged the call's recording (ISO 8601), or `null`. A purged call plays nothing until it
   * is registered with another recording.
   */
  purgedAt: string | null;
  /**
   * What Twilio last reported about the recording by webhook (`completed`, `absent`, `failed`, `deleted`,
   * …), or `null` when it reported nothing.
   */
  recordingStatus: string | null;
  /** ISO 8601, set by the backend. */
  createdAt: string;
  /** ISO 8601, set by the backend. */
  updatedAt: string;
}

/** Fields accepted when registering or updating a call. Omitted fields keep their stored value. */
export interface CallUpsert {
  businessId: string;
  callSid: CallSid;
  parentCallSid?: CallSid | null;
  recordingSid?: RecordingSid | null;
  direction?: string | null;
  from?: string | null;
  to?: string | null;
  startedAt?: string | null;
  durationS?: number | null;
}

/** What the resolver stores after looking a recording up. */
export interface RecordingResolution {
  recordingState: RecordingState;
  recordingSid?: RecordingSid | null;
  recordingOwnerCallSid?: CallSid | null;
  recordingSize?: number | null;
  recordingDurationS?: number | null;
  /** Twilio's reported recording status (see {@link CallRecord.recordingStatus}). */
  recordingStatus?: string | null;
}

export interface ListOptions {
  /** Page size, 1..200. */
  limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string | undefined;
}

export interface CallPage {
  calls: CallRecord[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  nextCursor: string | null;
}

/** One play of a recording, for the audit trail: who listened to which call. */
export interface PlayRecord {
  /** ISO 8601. */
  playedAt: string;
  businessId: string;
  callSid: CallSid;
  recordingSid: RecordingSid;
  /** Body bytes sent (fewer than the response promised when the client went away). */
  bytes: number;
  /** The response's status (200 or 206). */
  status: number;
  requestId: string;
}

export interface PlayPage {
  plays: PlayRecord[];
  /** Pass as `cursor` to get older plays; `null` on the last page. */
  nextCursor: string | null;
}

/** Most SIDs {@link CallLog.businessesOf} takes at once (a page of 200 calls links to at most 400). */
export const MAX_BUSINESSES_OF = 1000;

export interface CallLog {
  /**
   * Creates the schema or brings it to the latest version. Idempotent; safe to run from several
   * processes at once (backends serialise migrations).
   */
  migrate(): Promise<void>;

  /** The call, whoever owns it, or `undefined`. For internal lookups (parent fallback, webhooks). */
  get(callSid: CallSid): Promise<CallRecord | undefined>;

  /**
   * The call if, and only if, it belongs to `businessId`; otherwise `undefined`, exactly as for an
   * unknown call, so that callers cannot tell another tenant's call from a missing one.
   */
  getForBusiness(businessId: string, callSid: CallSid): Promise<CallRecord | undefined>;

  /**
   * {@link getForBusiness} answered at once, by a call log whose reads never wait (SQLite's are synchronous):
   * a warm play then needs no promise for it. Same answers; its errors are thrown. Optional: without it,
   * callers use getForBusiness.
   */
  getForBusinessNow?(businessId: string, callSid: CallSid): CallRecord | undefined;

  /**
   * The business each of `callSids` is registered to; calls nobody registered are left out of the map.
   * For tenancy checks on the links between calls (parents, recording owners), one query for a whole page.
   * Takes at most {@link MAX_BUSINESSES_OF} SIDs; throws RECGATE_INVALID_REQUEST for more, and
   * RECGATE_INVALID_CALL_SID for a malformed one.
   */
  businessesOf(callSids: readonly CallSid[]): Promise<Map<CallSid, string>>;

  /**
   * Registers a call or updates it. Fields left out keep their stored values. Changing `recordingSid`
   * resets the stored resolution to `unknown` (or `available` for an explicit SID, owned by this call), and
   * clears a purge mark (see {@link markPurged}).
   * Throws RECGATE_FORBIDDEN if the call exists under another business.
   */
  upsert(input: CallUpsert): Promise<CallRecord>;

  /** Stores what the resolver found. A no-op for an unknown call. */
  setResolution(callSid: CallSid, resolution: RecordingResolution): Promise<void>;

  /** Marks every call whose recording is `recordingSid` with the given resolution (webhooks, deletions). */
  setResolutionByRecording(recordingSid: RecordingSid, resolution: RecordingResolution): Promise<void>;

  /** The business's calls, newest first (by `startedAt`, then `createdAt`, then SID), cursor-paged. */
  list(businessId: string, options: ListOptions): Promise<CallPage>;

  /**
   * Records an operator's purge: `recordingSid` (if any) joins the purged recordings, and the call and every
   * call playing that recording get `purgedAt`. Resolves to the number of calls marked.
   */
  markPurged(callSid: CallSid, recordingSid: RecordingSid | null): Promise<number>;

  /** Whether an operator purged `recordingSid` (see {@link markPurged}). */
  isPurged(recordingSid: RecordingSid): Promise<boolean>;

  /** Appends plays to the audit trail, in one statement. */
  recordPlays(plays: readonly PlayRecord[]): Promise<void>;

  /** The plays of a call, newest first, cursor-paged like {@link list}. */
  listPlays(callSid: CallSid, options: ListOptions): Promise<PlayPage>;

  /** Whether the backend answers; used by `/readyz`. */
  ping(): Promise<boolean>;

  /**
   * The highest schema version recorded in the database (its `schema_migrations`), read back from it; 0
   * before the first migration. Higher than this code's latest migration when a newer recgate migrated the
   * database (`recgate doctor` reports that downgrade). Throws RECGATE_DATABASE_ERROR.
   */
  schemaVersion(): Promise<number>;

  /** Releases connections and file handles. */
  close(): Promise<void>;
}
