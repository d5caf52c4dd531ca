/**
 * {@link PrefetchQueue} in the call log's PostgreSQL, shared by every host. A claim locks the due rows it
 * picks with `FOR UPDATE SKIP LOCKED`, so concurrent claims on several hosts each get other jobs and never
 * wait on one another.
 */
import pg from 'pg';
import { databaseError, requireBusinessId, requireCallSid, requireRecordingSid } from '../call-log/common.js';
import type { RecordingSid } from '../sid.js';
import {
  depthOf,
  errorText,
  type PrefetchDepth,
  type PrefetchJob,
  type PrefetchJobInput,
  type PrefetchQueue,
  type PrefetchRow,
  rowToJob,
} from './queue.js';

const SQL = {
  enqueue: `
    INSERT INTO prefetch_jobs (recording_sid, call_sid, business_id, state, attempts, run_after, created_at,
      updated_at)
    VALUES ($1, $2, $3, 'queued', 0, now(), now(), now())
    ON CONFLICT (recording_sid) DO UPDATE SET
      call_sid = EXCLUDED.call_sid, business_id = EXCLUDED.business_id, state = 'queued', attempts = 0,
      run_after = EXCLUDED.run_after, last_error = NULL, updated_at = EXCLUDED.updated_at
    WHERE prefetch_jobs.state <> 'running'`,
  claim: `
    UPDATE prefetch_jobs SET state = 'running', attempts = attempts + 1,
      run_after = now() + make_interval(secs => $2::double precision / 1000), updated_at = now()
    WHERE recording_sid IN (
      SELECT recording_sid FROM prefetch_jobs
      WHERE state IN ('queued', 'running') AND run_after <= now()
      ORDER BY run_after LIMIT $1
      FOR UPDATE SKIP LOCKED)
    RETURNING *`,
  complete: `UPDATE prefetch_jobs SET state = 'done', last_error = NULL, updated_at = now() WHERE recording_sid = $1`,
  retry: `
    UPDATE prefetch_jobs SET state = 'queued', last_error = $2,
      run_after = now() + make_interval(secs => $3::double precision / 1000), updated_at = now()
    WHERE recording_sid = $1`,
  fail: `UPDATE prefetch_jobs SET state = 'failed', last_error = $2, updated_at = now() WHERE recording_sid = $1`,
  get: 'SELECT * FROM prefetch_jobs WHERE recording_sid = $1',
  depth: `SELECT state, count(*) AS n FROM prefetch_jobs WHERE state <> 'done' GROUP BY state`,
} as const;

export interface PostgresPrefetchQueueOptions {
  connectionString: string;
  /** The call log's schema. @default the server's default search_path */
  schema?: string | undefined;
  /** @default 2 */
  poolSize?: number;
}

export class PostgresPrefetchQueue implements PrefetchQueue {
  readonly #pool: pg.Pool;
  #closed = false;

  constructor(options: PostgresPrefetchQueueOptions) {
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.poolSize ?? 2,
      ...(options.schema === undefined ? {} : { options: `-c search_path=${options.schema}` }),
    });
    // An idle connection's error (a server restart) drops it; the next query opens another.
    this.#pool.on('error', () => {});
  }

  async #query(sql: string, params: unknown[]): Promise<PrefetchRow[]> {
    if (this.#closed) throw databaseError(new Error('the prefetch queue is closed'));
    try {
      return (await this.#pool.query<PrefetchRow>(sql, params)).rows;
    } catch (err) {
      throw databaseError(err);
    }
  }

  async enqueue(job: PrefetchJobInput): Promise<void> {
    await this.#query(SQL.enqueue, [
      requireRecordingSid(job.recordingSid),
      requireCallSid(job.callSid),
      requireBusinessId(job.businessId),
    ]);
  }

  async claim(limit: number, leaseMs: number): Promise<PrefetchJob[]> {
    return (await this.#query(SQL.claim, [limit, leaseMs])).map(rowToJob);
  }

  async complete(recordingSid: RecordingSid): Promise<void> {
    await this.#query(SQL.complete, [recordingSid]);
  }

  async retry(recordingSid: RecordingSid, error: string, delayMs: number): Promise<void> {
    await this.#query(SQL.retry, [recordingSid, errorText(error), delayMs]);
  }

  async fail(recordingSid: RecordingSid, error: string): Promise<void> {
    await this.#query(SQL.fail, [recordingSid, errorText(error)]);
  }

  async get(recordingSid: RecordingSid): Promise<PrefetchJob | undefined> {
    const [row] = await this.#query(SQL.get, [recordingSid]);
    return row && rowToJob(row);
  }

  async depth(): Promise<PrefetchDepth> {
    const rows = (await this.#query(SQL.depth, [])) as unknown as Array<{ state: string; n: string }>;
    return depthOf(rows);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }
}
