/**
 * {@link PrefetchQueue} in the call log's SQLite file, on its own connection (WAL mode lets it read while
 * the call log writes). A claim is one `UPDATE … RETURNING`, which SQLite runs under its single write lock,
 * so the worker processes of a host never claim the same job.
 */
import Database from 'better-sqlite3';
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
    VALUES (@sid, @callSid, @businessId, 'queued', 0, @now, @now, @now)
    ON CONFLICT (recording_sid) DO UPDATE SET
      call_sid = excluded.call_sid, business_id = excluded.business_id, state = 'queued', attempts = 0,
      run_after = excluded.run_after, last_error = NULL, updated_at = excluded.updated_at
    WHERE prefetch_jobs.state <> 'running'`,
  claim: `
    UPDATE prefetch_jobs SET state = 'running', attempts = attempts + 1, run_after = @leaseEnd,
      updated_at = @now
    WHERE recording_sid IN (
      SELECT recording_sid FROM prefetch_jobs
      WHERE state IN ('queued', 'running') AND run_after <= @now
      ORDER BY run_after LIMIT @limit)
    RETURNING *`,
  complete: `UPDATE prefetch_jobs SET state = 'done', last_error = NULL, updated_at = @now WHERE recording_sid = @sid`,
  retry: `
    UPDATE prefetch_jobs SET state = 'queued', run_after = @runAfter, last_error = @error, updated_at = @now
    WHERE recording_sid = @sid`,
  fail: `UPDATE prefetch_jobs SET state = 'failed', last_error = @error, updated_at = @now WHERE recording_sid = @sid`,
  get: 'SELECT * FROM prefetch_jobs WHERE recording_sid = ?',
  depth: `SELECT state, count(*) AS n FROM prefetch_jobs WHERE state <> 'done' GROUP BY state`,
} as const;

export class SqlitePrefetchQueue implements PrefetchQueue {
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  #closed = false;

  /** Opens the call log's database file; the call log must have migrated it already. */
  constructor(path: string, options: { busyTimeoutMs?: number } = {}) {
    try {
      this.#db = new Database(path, { timeout: options.busyTimeoutMs ?? 5000 });
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma('synchronous = NORMAL');
    } catch (err) {
      throw databaseError(err);
    }
  }

  #run<T>(fn: (stmt: (sql: string) => Database.Statement) => T): Promise<T> {
    try {
      if (this.#closed) throw new Error('the prefetch queue is closed');
      return Promise.resolve(
        fn((sql) => {
          let stmt = this.#statements.get(sql);
          if (!stmt) {
            stmt = this.#db.prepare(sql);
            this.#statements.set(sql, stmt);
          }
          return stmt;
        }),
      );
    } catch (err) {
      return Promise.reject(databaseError(err));
    }
  }

  enqueue(job: PrefetchJobInput): Promise<void> {
    return this.#run((stmt) => {
      stmt(SQL.enqueue).run({
        sid: requireRecordingSid(job.recordingSid),
        callSid: requireCallSid(job.callSid),
        businessId: requireBusinessId(job.businessId),
        now: new Date().toISOString(),
      });
    });
  }

  claim(limit: number, leaseMs: number): Promise<PrefetchJob[]> {
    return this.#run((stmt) => {
      const now = Date.now();
      const rows = stmt(SQL.claim).all({
        now: new Date(now).toISOString(),
        leaseEnd: new Date(now + leaseMs).toISOString(),
        limit,
      }) as PrefetchRow[];
      return rows.map(rowToJob);
    });
  }

  complete(recordingSid: RecordingSid): Promise<void> {
    return this.#run((stmt) => {
      stmt(SQL.complete).run({ sid: recordingSid, now: new Date().toISOString() });
    });
  }

  retry(recordingSid: RecordingSid, error: string, delayMs: number): Promise<void> {
    return this.#run((stmt) => {
      const now = Date.now();
      stmt(SQL.retry).run({
        sid: recordingSid,
        error: errorText(error),
        runAfter: new Date(now + delayMs).toISOString(),
        now: new Date(now).toISOString(),
      });
    });
  }

  fail(recordingSid: RecordingSid, error: string): Promise<void> {
    return this.#run((stmt) => {
      stmt(SQL.fail).run({ sid: recordingSid, error: errorText(error), now: new Date().toISOString() });
    });
  }

  get(recordingSid: RecordingSid): Promise<PrefetchJob | undefined> {
    return this.#run((stmt) => {
      const row = stmt(SQL.get).get(recordingSid) as PrefetchRow | undefined;
      return row && rowToJob(row);
    });
  }

  depth(): Promise<PrefetchDepth> {
    return this.#run((stmt) => depthOf(stmt(SQL.depth).all() as Array<{ state: string; n: number }>));
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#db.close();
    return Promise.resolve();
  }
}
