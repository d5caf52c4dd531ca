/**
 * The prefetch queue: recordings to download before anyone asks, so the first click is already a hit. It
 * lives in the call log's database (table `prefetch_jobs`, migration 3), so it survives restarts, and on
 * PostgreSQL every host shares it: a job is claimed by one worker at a time (`FOR UPDATE SKIP LOCKED`).
 *
 * One interface, one file per backend beside it (`sqlite.ts`, `postgres.ts`); `test/prefetch/contract.ts`
 * is the suite both pass. Code outside this folder names only {@link PrefetchQueue}.
 *
 * A job is keyed by its recording. Its states: `queued` (runs once `runAfter` has passed), `running`
 * (claimed; `runAfter` is the end of the claim's lease: a worker that died leaves the job to be claimed
 * again once it passes), `done`, `failed` (gave up; `lastError` says why).
 */
import type { CallSid, RecordingSid } from '../sid.js';

export type PrefetchState = 'queued' | 'running' | 'done' | 'failed';

export interface PrefetchJobInput {
  recordingSid: RecordingSid;
  /** The call that owns the recording (its file is `{callSid}.mp3`). */
  callSid: CallSid;
  businessId: string;
}

export interface PrefetchJob extends PrefetchJobInput {
  state: PrefetchState;
  /** Claims so far, this one included. */
  attempts: number;
  /** ISO 8601: when a queued job may run, or when a running job's lease ends. */
  runAfter: string;
  lastError: string | null;
}

export interface PrefetchDepth {
  queued: number;
  running: number;
  failed: number;
}

export interface PrefetchQueue {
  /**
   * Queues the recording's download now. A job already queued, done or failed is queued again (a repeated
   * webhook costs a cache hit at most); one running is left alone.
   */
  enqueue(job: PrefetchJobInput): Promise<void>;

  /**
   * Claims up to `limit` jobs that are due (queued and past `runAfter`, or running with a lease that ended),
   * the longest due first (returned in no particular order): each becomes `running` with a lease of `leaseMs` and one more attempt. Two claims,
   * in any processes or hosts, never get the same job while its lease runs.
   */
  claim(limit: number, leaseMs: number): Promise<PrefetchJob[]>;

  /** The job is done. */
  complete(recordingSid: RecordingSid): Promise<void>;

  /** The attempt failed; the job runs again after `delayMs`. */
  retry(recordingSid: RecordingSid, error: string, delayMs: number): Promise<void>;

  /** The job failed for good. */
  fail(recordingSid: RecordingSid, error: string): Promise<void>;

  /** The job of a recording, or `undefined`. */
  get(recordingSid: RecordingSid): Promise<PrefetchJob | undefined>;

  /** Jobs by state, for metrics (done jobs are not counted). */
  depth(): Promise<PrefetchDepth>;

  close(): Promise<void>;
}

/** A `prefetch_jobs` row as either driver returns it. */
export interface PrefetchRow {
  recording_sid: string;
  call_sid: string;
  business_id: string;
  state: string;
  attempts: number;
  run_after: string | Date;
  last_error: string | null;
}

/** Longest error text stored with a job. */
export const MAX_ERROR_LENGTH = 500;

export function rowToJob(row: PrefetchRow): PrefetchJob {
  return {
    recordingSid: row.recording_sid as RecordingSid,
    callSid: row.call_sid as CallSid,
    businessId: row.business_id,
    state: row.state as PrefetchState,
    attempts: Number(row.attempts),
    runAfter: row.run_after instanceof Date ? row.run_after.toISOString() : row.run_after,
    lastError: row.last_error,
  };
}

export function errorText(error: string): string {
  return error.length > MAX_ERROR_LENGTH ? `${error.slice(0, MAX_ERROR_LENGTH - 1)}…` : error;
}

/** Counts by state from `SELECT state, count(*) AS n … GROUP BY state`. */
export function depthOf(rows: Array<{ state: string; n: number | string }>): PrefetchDepth {
  const depth: PrefetchDepth = { queued: 0, running: 0, failed: 0 };
  for (const row of rows) {
    if (row.state === 'queued' || row.state === 'running' || row.state === 'failed') {
      depth[row.state] = Number(row.n);
    }
  }
  return depth;
}
