/**
 * The call log in a SQLite file, through better-sqlite3. The driver is synchronous; each method runs its
 * statement inline and returns a settled promise, which is fast for the small indexed queries used here.
 * Several worker processes may open the same file: WAL mode lets readers run beside the one writer, and
 * `busy_timeout` makes a writer wait for the lock instead of failing at once.
 */
import type Database from 'better-sqlite3';
import { createError } from '../errors.js';
import type { CallSid, RecordingSid } from '../sid.js';
import type {
  CallLog,
  CallPage,
  CallRecord,
  CallUpsert,
  ListOptions,
  PlayPage,
  PlayRecord,
  RecordingResolution,
} from './call-log.js';
import {
  type BusinessRow,
  type CallRow,
  databaseError,
  decodeCursor,
  decodePlayCursor,
  normalizePlay,
  normalizeResolution,
  normalizeUpsert,
  type PlayRow,
  parseLimit,
  requireBusinessId,
  requireCallSid,
  requireCallSids,
  requireRecordingSid,
  resolutionForNewRecording,
  rowToRecord,
  toPage,
  toPlayPage,
} from './common.js';
import type { Migration } from './migrations/migration.js';
import { SQLITE_MIGRATIONS } from './migrations/sqlite-migrations.js';
import { openSqliteFile } from './sqlite-file.js';

export interface SqliteCallLogOptions {
  /**
   * How long a write waits for another process's write lock before failing, in milliseconds.
   * @default 5000
   */
  busyTimeoutMs?: number;
  /** Migrations to apply; tests pass their own list. @default SQLITE_MIGRATIONS */
  migrations?: readonly Migration[];
}

/** Calls the records cache holds at most (see #lookup): those being played now, not the whole log. */
const RECORDS_CACHED = 1000;

const ORDER = 'ORDER BY started_at DESC NULLS LAST, created_at DESC, call_sid DESC LIMIT @limit';

export const SQL = {
  get: 'SELECT * FROM calls WHERE call_sid = ?',
  // What changed since: commits of other connections (data_version), and this one's writes. Two statements:
  // the pragma alone takes about 5 us, against 8 us through the pragma_data_version table function, and
  // total_changes() reads no table (0.1 us).
  dataVersion: 'PRAGMA data_version',
  totalChanges: 'SELECT total_changes()',
  // One statement for any number of SIDs, passed as a JSON array; each is a primary-key lookup.
  businessesOf: 'SELECT call_sid, business_id FROM calls WHERE call_sid IN (SELECT value FROM json_each(?))',
  // One statement, so that a concurrent writer cannot slip in between a read and a write. Omitted fields
  // arrive with their `has*` flag off and keep the stored value; SET expressions see the old row.
  upsert: `
    INSERT INTO calls (call_sid, business_id, parent_call_sid, recording_sid, recording_owner_call_sid,
      recording_state, direction, from_number, to_number, started_at, duration_s, created_at, updated_at)
    VALUES (@callSid, @businessId, @parentCallSid, @recordingSid, @owner, @state, @direction, @from, @to,
      @startedAt, @durationS, @now, @now)
    ON CONFLICT (call_sid) DO UPDATE SET
      parent_call_sid = iif(@hasParent, excluded.parent_call_sid, calls.parent_call_sid),
      direction = iif(@hasDirection, excluded.direction, calls.direction),
      from_number = iif(@hasFrom, excluded.from_number, calls.from_number),
      to_number = iif(@hasTo, excluded.to_number, calls.to_number),
      started_at = iif(@hasStartedAt, excluded.started_at, calls.started_at),
      duration_s = iif(@hasDurationS, excluded.duration_s, calls.duration_s),
      recording_sid = iif(@recordingChanged, excluded.recording_sid, calls.recording_sid),
      recording_owner_call_sid =
        iif(@recordingChanged, excluded.recording_owner_call_sid, calls.recording_owner_call_sid),
      recording_state = iif(@recordingChanged, excluded.recording_state, calls.recording_state),
      recording_size = iif(@recordingChanged, NULL, calls.recording_size),
      recording_duration_s = iif(@recordingChanged, NULL, calls.recording_duration_s),
      purged_at = iif(@recordingChanged, NULL, calls.purged_at),
      updated_at = excluded.updated_at
    WHERE calls.business_id = excluded.business_id
    RETURNING *`,
  resolutionSet: `
    recording_state = @state,
    recording_sid = iif(@hasSid, @sid, recording_sid),
    recording_owner_call_sid = iif(@hasOwner, @owner, recording_owner_call_sid),
    recording_size = iif(@hasSize, @size, recording_size),
    recording_duration_s = iif(@hasDuration, @duration, recording_duration_s),
    recording_status = iif(@hasStatus, @status, recording_status),
    updated_at = @now`,
  purgeRecording: `
    INSERT INTO purged_recordings (recording_sid, purged_at) VALUES (@sid, @now)
    ON CONFLICT (recording_sid) DO NOTHING`,
  markPurged: `
    UPDATE calls SET purged_at = @now, updated_at = @now
    WHERE call_sid = @callSid OR (@sid IS NOT NULL AND recording_sid = @sid)`,
  isPurged: 'SELECT 1 FROM purged_recordings WHERE recording_sid = ?',
  recordPlays: `
    INSERT INTO plays (played_at, business_id, call_sid, recording_sid, bytes, status, request_id)
    SELECT value ->> '$[0]', value ->> '$[1]', value ->> '$[2]', value ->> '$[3]', value ->> '$[4]',
      value ->> '$[5]', value ->> '$[6]'
    FROM json_each(?)`,
  firstPlays: 'SELECT * FROM plays WHERE call_sid = @callSid ORDER BY id DESC LIMIT @limit',
  olderPlays: 'SELECT * FROM plays WHERE call_sid = @callSid AND id < @before ORDER BY id DESC LIMIT @limit',
  firstPage: `SELECT * FROM calls WHERE business_id = @businessId ${ORDER}`,
  // Keyset pages seek straight to the cursor in calls_business_order_idx, at any depth: a row-value
  // comparison is a range on the index, where an OR of the cursor's cases made SQLite walk the business's
  // rows from the newest. Undated calls (NULL start, sorted last) are a second range, read by
  // firstUnstarted once the dated ones run out.
  afterStarted: `
    SELECT * FROM calls WHERE business_id = @businessId AND started_at <= @startedAt
      AND (started_at, created_at, call_sid) < (@startedAt, @createdAt, @callSid) ${ORDER}`,
  firstUnstarted: `SELECT * FROM calls WHERE business_id = @businessId AND started_at IS NULL ${ORDER}`,
  afterUnstarted: `
    SELECT * FROM calls WHERE business_id = @businessId AND started_at IS NULL
      AND (created_at, call_sid) < (@createdAt, @callSid) ${ORDER}`,
} as const;

/**
 * `recordingChanged` is computed inside the upsert: SQLite's `IS NOT` is the NULL-safe inequality, so a
 * repeated `recordingSid` keeps the stored resolution while a new one (or null) resets it.
 */
const UPSERT = SQL.upsert.replaceAll(
  '@recordingChanged',
  '(@hasRecording AND calls.recording_sid IS NOT excluded.recording_sid)',
);

export class SqliteCallLog implements CallLog {
  readonly #db: Database.Database;
  readonly #migrations: readonly Migration[];
  readonly #statements = new Map<string, Database.Statement>();
  /** Calls read since the database last changed (`null`: no such call); see {@link #lookup}. */
  readonly #records = new Map<CallSid, CallRecord | null>();
  #cachedVersion = -1;
  #cachedChanges = -1;
  #closed = false;

  /**
   * Opens (creating if needed) the database at `path`; `:memory:` gives a private in-memory database.
   * The directory must exist. Call {@link migrate} before use. Throws RECGATE_DATABASE_ERROR if the file
   * cannot be opened.
   */
  constructor(path: string, options: SqliteCallLogOptions = {}) {
    if (typeof path !== 'string' || path.length === 0) {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'path must be a non-empty string' });
    }
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw createError('RECGATE_INVALID_REQUEST', {
        message: 'options.busyTimeoutMs must be a non-negative integer',
      });
    }
    this.#migrations = options.migrations ?? SQLITE_MIGRATIONS;
    this.#db = openSqliteFile(path, busyTimeoutMs);
    try {
      this.#db.pragma('foreign_keys = ON');
    } catch (err) {
      this.#db.close();
      throw databaseError(err);
    }
  }

  /** Prepared statements are cached; they can only be prepared once `calls` exists, hence lazily. */
  #stmt(sql: string): Database.Statement {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = this.#db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  /** `fn()`, or RECGATE_DATABASE_ERROR (a RecgateError it threw passes unchanged), thrown. */
  #now<T>(fn: () => T): T {
    try {
      if (this.#closed) throw new Error('the call log is closed');
      return fn();
    } catch (err) {
      throw databaseError(err);
    }
  }

  /** {@link #now} as a promise, for the interface's methods. */
  #run<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(this.#now(fn));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Applies the migrations not yet recorded in `schema_migrations`, all in one `BEGIN IMMEDIATE`
   * transaction: a second process migrating at the same time waits for the write lock (up to the busy
   * timeout), then finds every version recorded and does nothing.
   */
  migrate(): Promise<void> {
    return this.#run(() => {
      const db = this.#db;
      db.transaction(() => {
        db.exec(
          'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)',
        );
        const applied = new Set(
          db
            .prepare('SELECT version FROM schema_migrations')
            .pluck()
            .all()
            .map((v) => Number(v)),
        );
        const record = db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)');
        for (const migration of this.#migrations) {
          if (applied.has(migration.version)) continue;
          db.exec(migration.sql);
          record.run(migration.version, new Date().toISOString());
        }
      }).immediate();
    });
  }

  get(callSid: CallSid): Promise<CallRecord | undefined> {
    return this.#run(() => this.#lookup(requireCallSid(callSid)));
  }

  getForBusiness(businessId: string, callSid: CallSid): Promise<CallRecord | undefined> {
    return this.#run(() => this.#forBusiness(businessId, callSid));
  }

  getForBusinessNow(businessId: string, callSid: CallSid): CallRecord | undefined {
    return this.#now(() => this.#forBusiness(businessId, callSid));
  }

  #forBusiness(businessId: string, callSid: CallSid): CallRecord | undefined {
    requireBusinessId(businessId);
    const call = this.#lookup(requireCallSid(callSid));
    return call?.businessId === businessId ? call : undefined;
  }

  /**
   * The call's row, from the records cache when the database is as it was when the row was read. Every play
   * looks its call up, and a warm one costs little else: a query takes about 8 us (two file-lock system
   * calls, sixteen columns), the check that nothing changed about 5 us (the same two locks). `data_version`
   * changes when another connection (another process, another host on the same file) commits;
   * `total_changes()` when this one writes. Any change empties the cache, so it never answers what a query
   * would not.
   */
  #lookup(callSid: CallSid): CallRecord | undefined {
    const version = this.#stmt(SQL.dataVersion).pluck().get() as number;
    const changes = this.#stmt(SQL.totalChanges).pluck().get() as number;
    if (version !== this.#cachedVersion || changes !== this.#cachedChanges) {
      this.#records.clear();
      this.#cachedVersion = version;
      this.#cachedChanges = changes;
    }
    const known = this.#records.get(callSid);
    if (known !== undefined) return known ?? undefined;
    const row = this.#stmt(SQL.get).get(callSid) as CallRow | undefined;
    const call = row && rowToRecord(row);
    if (this.#records.size >= RECORDS_CACHED) this.#records.delete(this.#records.keys().next().value!);
    this.#records.set(callSid, call ?? null);
    return call;
  }

  businessesOf(callSids: readonly CallSid[]): Promise<Map<CallSid, string>> {
    return this.#run(() => {
      const sids = requireCallSids(callSids);
      if (sids.length === 0) return new Map();
      const rows = this.#stmt(SQL.businessesOf).all(JSON.stringify(sids)) as BusinessRow[];
      return new Map(rows.map((row) => [row.call_sid as CallSid, row.business_id]));
    });
  }

  upsert(input: CallUpsert): Promise<CallRecord> {
    return this.#run(() => {
      const call = normalizeUpsert(input);
      const fresh = resolutionForNewRecording(call.callSid, call.recordingSid.value);
      const row = this.#stmt(UPSERT).get({
        callSid: call.callSid,
        businessId: call.businessId,
        parentCallSid: call.parentCallSid.value,
        recordingSid: call.recordingSid.value,
        owner: fresh.owner,
        state: fresh.state,
        direction: call.direction.value,
        from: call.from.value,
        to: call.to.value,
        startedAt: call.startedAt.value,
        durationS: call.durationS.value,
        now: new Date().toISOString(),
        hasParent: flag(call.parentCallSid.set),
        hasRecording: flag(call.recordingSid.set),
        hasDirection: flag(call.direction.set),
        hasFrom: flag(call.from.set),
        hasTo: flag(call.to.set),
        hasStartedAt: flag(call.startedAt.set),
        hasDurationS: flag(call.durationS.set),
      }) as CallRow | undefined;
      // No row back means the conflict's WHERE failed: the call exists under another business.
      if (!row) throw createError('RECGATE_FORBIDDEN', { message: 'The call belongs to another business' });
      return rowToRecord(row);
    });
  }

  setResolution(callSid: CallSid, resolution: RecordingResolution): Promise<void> {
    return this.#run(() => {
      const sid = requireCallSid(callSid);
      this.#stmt(`UPDATE calls SET ${SQL.resolutionSet} WHERE call_sid = @key`).run({
        ...resolutionParams(resolution),
        key: sid,
      });
    });
  }

  setResolutionByRecording(recordingSid: RecordingSid, resolution: RecordingResolution): Promise<void> {
    return this.#run(() => {
      const key = requireRecordingSid(recordingSid);
      this.#stmt(`UPDATE calls SET ${SQL.resolutionSet} WHERE recording_sid = @key`).run({
        ...resolutionParams(resolution),
        key,
      });
    });
  }

  markPurged(callSid: CallSid, recordingSid: RecordingSid | null): Promise<number> {
    return this.#run(() => {
      const params = {
        callSid: requireCallSid(callSid),
        sid: recordingSid === null ? null : requireRecordingSid(recordingSid),
        now: new Date().toISOString(),
      };
      return this.#db.transaction(() => {
        if (params.sid !== null) this.#stmt(SQL.purgeRecording).run(params);
        return this.#stmt(SQL.markPurged).run(params).changes;
      })();
    });
  }

  isPurged(recordingSid: RecordingSid): Promise<boolean> {
    return this.#run(() => this.#stmt(SQL.isPurged).get(requireRecordingSid(recordingSid)) !== undefined);
  }

  recordPlays(plays: readonly PlayRecord[]): Promise<void> {
    return this.#run(() => {
      if (plays.length === 0) return;
      const rows = plays
        .map(normalizePlay)
        .map((p) => [p.playedAt, p.businessId, p.callSid, p.recordingSid, p.bytes, p.status, p.requestId]);
      this.#stmt(SQL.recordPlays).run(JSON.stringify(rows));
    });
  }

  listPlays(callSid: CallSid, options: ListOptions): Promise<PlayPage> {
    return this.#run(() => {
      const limit = parseLimit(options?.limit);
      const params = { callSid: requireCallSid(callSid), limit: limit + 1 };
      const rows = (
        options?.cursor == null
          ? this.#stmt(SQL.firstPlays).all(params)
          : this.#stmt(SQL.olderPlays).all({ ...params, before: decodePlayCursor(options.cursor) })
      ) as PlayRow[];
      return toPlayPage(rows, limit);
    });
  }

  list(businessId: string, options: ListOptions): Promise<CallPage> {
    return this.#run(() => {
      const business = requireBusinessId(businessId);
      const limit = parseLimit(options?.limit);
      const cursor = options?.cursor == null ? undefined : decodeCursor(options.cursor);
      const params = { businessId: business, limit: limit + 1 };
      let rows: CallRow[];
      if (cursor === undefined) {
        rows = this.#stmt(SQL.firstPage).all(params) as CallRow[];
      } else if (cursor.startedAt === null) {
        const after = { ...params, createdAt: cursor.createdAt, callSid: cursor.callSid };
        rows = this.#stmt(SQL.afterUnstarted).all(after) as CallRow[];
      } else {
        const after = {
          ...params,
          startedAt: cursor.startedAt,
          createdAt: cursor.createdAt,
          callSid: cursor.callSid,
        };
        // Both reads in one transaction, so the page is one snapshot.
        rows = this.#db.transaction(() => {
          const dated = this.#stmt(SQL.afterStarted).all(after) as CallRow[];
          if (dated.length > limit) return dated;
          const rest = { businessId: business, limit: limit + 1 - dated.length };
          return dated.concat(this.#stmt(SQL.firstUnstarted).all(rest) as CallRow[]);
        })();
      }
      return toPage(rows, limit);
    });
  }

  schemaVersion(): Promise<number> {
    return this.#run(() => {
      const table = this.#db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        .get();
      if (table === undefined) return 0;
      return Number(
        this.#db.prepare('SELECT coalesce(max(version), 0) FROM schema_migrations').pluck().get(),
      );
    });
  }

  ping(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    try {
      this.#stmt('SELECT 1').get();
      return Promise.resolve(true);
    } catch {
      return Promise.resolve(false);
    }
  }

  /** Closes the database; idempotent. Later calls reject with RECGATE_DATABASE_ERROR. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    try {
      this.#db.close();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(databaseError(err));
    }
  }
}

/** better-sqlite3 binds numbers, strings, bigints, buffers and null; booleans go in as 0/1. */
function flag(value: boolean): 0 | 1 {
  return value ? 1 : 0;
}

function resolutionParams(resolution: RecordingResolution) {
  const r = normalizeResolution(resolution);
  return {
    state: r.recordingState,
    hasSid: flag(r.recordingSid.set),
    sid: r.recordingSid.value,
    hasOwner: flag(r.recordingOwnerCallSid.set),
    owner: r.recordingOwnerCallSid.value,
    hasSize: flag(r.recordingSize.set),
    size: r.recordingSize.value,
    hasDuration: flag(r.recordingDurationS.set),
    duration: r.recordingDurationS.value,
    hasStatus: flag(r.recordingStatus.set),
    status: r.recordingStatus.value,
    now: new Date().toISOString(),
  };
}
