/**
 * The call log in PostgreSQL, through a `pg` connection pool. Every connection starts with `search_path`
 * set to the configured schema, so one database can hold several independent call logs (tests give each
 * run its own schema). Times are `timestamptz`, written and read at millisecond precision.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { isPostgresUrl } from '../config/database-url.js';
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
import { POSTGRES_MIGRATIONS } from './migrations/postgres-migrations.js';
import { SCHEMA_NAME, warmPool } from './schema-pool.js';

export interface PostgresCallLogOptions {
  /** A `postgres://` or `postgresql://` URL. Required. */
  connectionString: string;
  /**
   * Schema holding the tables; created by {@link PostgresCallLog.migrate} if missing. Lower-case letters,
   * digits and `_`, starting with a letter or `_`, at most 63 characters.
   * @default the server's default search_path (normally `public`)
   */
  schema?: string;
  /** Most connections the pool opens. @default 10 */
  poolSize?: number;
  /**
   * Connections {@link PostgresCallLog.migrate} opens and the pool keeps open however long they sit idle,
   * at most `poolSize`. Opening one costs a round of authentication and a server process, tens of ms
   * (hundreds when many processes start at once): without warm connections the first burst of requests
   * after a start, the first stampede on a recording, waits for them.
   * @default 2 (or `poolSize`, when smaller)
   */
  minConnections?: number;
  /** How long to wait for a new connection before failing, in milliseconds. @default 10000 */
  connectionTimeoutMs?: number;
  /**
   * Told about errors on idle pooled connections (for example the server restarting). Such a connection
   * is dropped and replaced on next use, so this is for logging only.
   * @default ignore them
   */
  onIdleError?: (err: Error) => void;
  /** Migrations to apply; tests pass their own list. @default POSTGRES_MIGRATIONS */
  migrations?: readonly Migration[];
}

const ORDER = 'ORDER BY started_at DESC NULLS LAST, created_at DESC, call_sid DESC LIMIT $2';

const RESOLUTION_SET = `
  recording_state = $2,
  recording_sid = CASE WHEN $3::boolean THEN $4::text ELSE recording_sid END,
  recording_owner_call_sid = CASE WHEN $5::boolean THEN $6::text ELSE recording_owner_call_sid END,
  recording_size = CASE WHEN $7::boolean THEN $8::bigint ELSE recording_size END,
  recording_duration_s = CASE WHEN $9::boolean THEN $10::double precision ELSE recording_duration_s END,
  updated_at = $11::timestamptz,
  recording_status = CASE WHEN $12::boolean THEN $13::text ELSE recording_status END`;

/**
 * One statement, so that a concurrent writer cannot slip in between a read and a write. Omitted fields
 * arrive with their flag off and keep the stored value; SET expressions see the old row. The recording
 * resolution resets only when `recordingSid` is given and differs (NULL-safe) from the stored one.
 */
const RECORDING_CHANGED = '($13::boolean AND calls.recording_sid IS DISTINCT FROM EXCLUDED.recording_sid)';

export const SQL = {
  get: 'SELECT * FROM calls WHERE call_sid = $1',
  getForBusiness: 'SELECT * FROM calls WHERE call_sid = $1 AND business_id = $2',
  businessesOf: 'SELECT call_sid, business_id FROM calls WHERE call_sid = ANY($1::text[])',
  upsert: `
    INSERT INTO calls (call_sid, business_id, parent_call_sid, recording_sid, recording_owner_call_sid,
      recording_state, direction, from_number, to_number, started_at, duration_s, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::timestamptz, $11::double precision, $12::timestamptz,
      $12::timestamptz)
    ON CONFLICT (call_sid) DO UPDATE SET
      parent_call_sid = CASE WHEN $14::boolean THEN EXCLUDED.parent_call_sid ELSE calls.parent_call_sid END,
      direction = CASE WHEN $15::boolean THEN EXCLUDED.direction ELSE calls.direction END,
      from_number = CASE WHEN $16::boolean THEN EXCLUDED.from_number ELSE calls.from_number END,
      to_number = CASE WHEN $17::boolean THEN EXCLUDED.to_number ELSE calls.to_number END,
      started_at = CASE WHEN $18::boolean THEN EXCLUDED.started_at ELSE calls.started_at END,
      duration_s = CASE WHEN $19::boolean THEN EXCLUDED.duration_s ELSE calls.duration_s END,
      recording_sid = CASE WHEN ${RECORDING_CHANGED} THEN EXCLUDED.recording_sid ELSE calls.recording_sid END,
      recording_owner_call_sid = CASE WHEN ${RECORDING_CHANGED}
        THEN EXCLUDED.recording_owner_call_sid ELSE calls.recording_owner_call_sid END,
      recording_state = CASE WHEN ${RECORDING_CHANGED}
        THEN EXCLUDED.recording_state ELSE calls.recording_state END,
      recording_size = CASE WHEN ${RECORDING_CHANGED} THEN NULL ELSE calls.recording_size END,
      recording_duration_s = CASE WHEN ${RECORDING_CHANGED} THEN NULL ELSE calls.recording_duration_s END,
      purged_at = CASE WHEN ${RECORDING_CHANGED} THEN NULL ELSE calls.purged_at END,
      updated_at = EXCLUDED.updated_at
    WHERE calls.business_id = EXCLUDED.business_id
    RETURNING *`,
  setResolution: `UPDATE calls SET ${RESOLUTION_SET} WHERE call_sid = $1`,
  setResolutionByRecording: `UPDATE calls SET ${RESOLUTION_SET} WHERE recording_sid = $1`,
  // One statement: the purged recording is remembered and its calls marked together, or neither.
  markPurged: `
    WITH purged AS (
      INSERT INTO purged_recordings (recording_sid, purged_at)
      SELECT $2::text, $3::timestamptz WHERE $2::text IS NOT NULL
      ON CONFLICT (recording_sid) DO NOTHING
    )
    UPDATE calls SET purged_at = $3::timestamptz, updated_at = $3::timestamptz
    WHERE call_sid = $1 OR ($2::text IS NOT NULL AND recording_sid = $2::text)
    RETURNING call_sid`,
  isPurged: 'SELECT 1 AS purged FROM purged_recordings WHERE recording_sid = $1',
  recordPlays: `
    INSERT INTO plays (played_at, business_id, call_sid, recording_sid, bytes, status, request_id)
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::integer[],
      $7::text[])`,
  firstPlays: 'SELECT * FROM plays WHERE call_sid = $1 ORDER BY id DESC LIMIT $2',
  olderPlays: 'SELECT * FROM plays WHERE call_sid = $1 AND id < $3 ORDER BY id DESC LIMIT $2',
  firstPage: `SELECT * FROM calls WHERE business_id = $1 ${ORDER}`,
  // Keyset pages seek straight to the cursor in calls_business_order_idx, at any depth: the row-value
  // comparison is an index condition. `started_at <= $5` repeats part of it because the planner cannot
  // estimate a row comparison: alone, it guessed a handful of rows and sorted everything behind the cursor.
  // Undated calls (NULL start, sorted last) are a second range, read by firstUnstarted once the dated ones
  // run out.
  afterStarted: `
    SELECT * FROM calls WHERE business_id = $1 AND started_at <= $5::timestamptz
      AND (started_at, created_at, call_sid) < ($5::timestamptz, $3::timestamptz, $4) ${ORDER}`,
  firstUnstarted: `SELECT * FROM calls WHERE business_id = $1 AND started_at IS NULL ${ORDER}`,
  afterUnstarted: `
    SELECT * FROM calls WHERE business_id = $1 AND started_at IS NULL
      AND (created_at, call_sid) < ($3::timestamptz, $4) ${ORDER}`,
} as const;

function invalidOption(message: string): never {
  throw createError('RECGATE_INVALID_REQUEST', { message });
}

export class PostgresCallLog implements CallLog {
  readonly #pool: pg.Pool;
  readonly #schema: string | undefined;
  readonly #migrations: readonly Migration[];
  readonly #minConnections: number;
  /** Reads in flight, by write count, key and call: see {@link #readOnce}. */
  readonly #reading = new Map<string, Promise<CallRecord | undefined>>();
  /** Bumped when a write to `calls` starts and when it ends. */
  #writes = 0;
  #closed = false;

  /** Validates the options and creates the pool; no connection is opened until {@link migrate} or a query. */
  constructor(options: PostgresCallLogOptions) {
    if (typeof options !== 'object' || options === null) invalidOption('options must be an object');
    const { connectionString, schema, poolSize = 10, connectionTimeoutMs = 10_000 } = options;
    if (typeof connectionString !== 'string' || !isPostgresUrl(connectionString)) {
      invalidOption('options.connectionString must be a postgres:// or postgresql:// URL');
    }
    if (schema !== undefined && (typeof schema !== 'string' || !SCHEMA_NAME.test(schema))) {
      invalidOption('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
    }
    if (!Number.isSafeInteger(poolSize) || poolSize < 1 || poolSize > 1000) {
      invalidOption('options.poolSize must be an integer from 1 to 1000');
    }
    if (!Number.isSafeInteger(connectionTimeoutMs) || connectionTimeoutMs < 1) {
      invalidOption('options.connectionTimeoutMs must be a positive integer');
    }
    const minConnections = options.minConnections ?? Math.min(2, poolSize);
    if (!Number.isSafeInteger(minConnections) || minConnections < 0 || minConnections > poolSize) {
      invalidOption('options.minConnections must be an integer from 0 to options.poolSize');
    }
    this.#minConnections = minConnections;
    this.#schema = schema;
    this.#migrations = options.migrations ?? POSTGRES_MIGRATIONS;
    this.#pool = new pg.Pool({
      connectionString,
      max: poolSize,
      min: minConnections,
      // Warm idle connections must not keep a process alive that has nothing else to do.
      allowExitOnIdle: true,
      connectionTimeoutMillis: connectionTimeoutMs,
      // A startup parameter rather than a SET after connecting: it is in force before any query runs.
      // The schema name was checked against SCHEMA_NAME, so it needs no quoting.
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    const onIdleError = options.onIdleError;
    // Without a listener an idle connection's error would be an unhandled 'error' event and crash the process.
    this.#pool.on('error', (err) => onIdleError?.(err));
  }

  async #query<Row extends object = CallRow>(sql: string, params: unknown[]): Promise<Row[]> {
    if (this.#closed) throw databaseError(new Error('the call log is closed'));
    try {
      const result = await this.#pool.query<Row>(sql, params);
      return result.rows;
    } catch (err) {
      throw databaseError(err);
    }
  }

  /**
   * Applies the migrations not yet recorded in `schema_migrations`, in one transaction holding a
   * transaction-level advisory lock keyed by the schema name: a second process migrating the same schema
   * waits for the first to commit, then finds every version recorded and does nothing. The schema itself
   * is created under the same lock, since concurrent `CREATE SCHEMA IF NOT EXISTS` can fail. Then opens
   * the pool's `minConnections`.
   */
  async migrate(): Promise<void> {
    await this.#migrate();
    await this.#warm();
  }

  /** Opens `minConnections` at once (the pool keeps them), so that no request waits for their set-up. */
  async #warm(): Promise<void> {
    await warmPool(this.#minConnections, () => this.#pool.connect()).catch((err: unknown) => {
      throw databaseError(err);
    });
  }

  async #migrate(): Promise<void> {
    if (this.#closed) throw databaseError(new Error('the call log is closed'));
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw databaseError(err);
    }
    let failed: unknown;
    // pg-pool listens for errors only on idle connections: without this, a session that dies while checked
    // out (terminated, failover) is an unhandled 'error' event that crashes the process. The query running
    // then rejects on its own, so the listener only has to keep the event handled.
    const onError = (err: Error) => {
      failed ??= err;
    };
    client.on('error', onError);
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [migrationLockKey(this.#schema)]);
      if (this.#schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.#schema}`);
      await client.query(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)',
      );
      const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
      const applied = new Set(rows.map((row) => Number(row.version)));
      for (const migration of this.#migrations) {
        if (applied.has(migration.version)) continue;
        await client.query(migration.sql);
        await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())', [
          migration.version,
        ]);
      }
      await client.query('COMMIT');
    } catch (err) {
      failed = err;
      await client.query('ROLLBACK').catch(() => {});
      throw databaseError(err);
    } finally {
      client.off('error', onError);
      // A connection whose rollback may have failed is discarded rather than returned to the pool.
      client.release(failed === undefined ? undefined : true);
    }
  }

  async get(callSid: CallSid): Promise<CallRecord | undefined> {
    const sid = requireCallSid(callSid);
    return this.#readOnce(`\n${sid}`, async () => {
      const [row] = await this.#query(SQL.get, [sid]);
      return row && rowToRecord(row);
    });
  }

  async getForBusiness(businessId: string, callSid: CallSid): Promise<CallRecord | undefined> {
    const sid = requireCallSid(callSid);
    const business = requireBusinessId(businessId);
    return this.#readOnce(`${business}\n${sid}`, async () => {
      const [row] = await this.#query(SQL.getForBusiness, [sid, business]);
      return row && rowToRecord(row);
    });
  }

  /**
   * Equal reads of one call at the same time share one query: every request of a stampede looks its call up
   * (hundreds at once, per worker), and each query would cost a pooled connection, a turn on the server,
   * and, on the first stampede after a start, new connections while the pool grows. A read joins only one
   * begun since this instance's last write to `calls` started or ended ({@link #wrote}), so what this process
   * wrote is read back; a write committed by another process while a shared query runs is seen by the next
   * query, as it would be by a query that had begun at the same moment. The record is shared too, as the
   * SQLite call log shares its cached ones.
   */
  #readOnce(key: string, read: () => Promise<CallRecord | undefined>): Promise<CallRecord | undefined> {
    const shared = `${this.#writes}\n${key}`;
    let reading = this.#reading.get(shared);
    if (reading === undefined) {
      reading = read().finally(() => this.#reading.delete(shared));
      this.#reading.set(shared, reading);
    }
    return reading;
  }

  /** Runs a write to `calls`; reads begun before its end are not shared with reads begun after. */
  async #wrote<T>(write: () => Promise<T>): Promise<T> {
    this.#writes++;
    try {
      return await write();
    } finally {
      this.#writes++;
    }
  }

  async businessesOf(callSids: readonly CallSid[]): Promise<Map<CallSid, string>> {
    const sids = requireCallSids(callSids);
    if (sids.length === 0) return new Map();
    const rows = await this.#query<BusinessRow>(SQL.businessesOf, [sids]);
    return new Map(rows.map((row) => [row.call_sid as CallSid, row.business_id]));
  }

  async upsert(input: CallUpsert): Promise<CallRecord> {
    const call = normalizeUpsert(input);
    const fresh = resolutionForNewRecording(call.callSid, call.recordingSid.value);
    const [row] = await this.#wrote(() =>
      this.#query(SQL.upsert, [
        call.callSid,
        call.businessId,
        call.parentCallSid.value,
        call.recordingSid.value,
        fresh.owner,
        fresh.state,
        call.direction.value,
        call.from.value,
        call.to.value,
        call.startedAt.value,
        call.durationS.value,
        new Date().toISOString(),
        call.recordingSid.set,
        call.parentCallSid.set,
        call.direction.set,
        call.from.set,
        call.to.set,
        call.startedAt.set,
        call.durationS.set,
      ]),
    );
    // No row back means the conflict's WHERE failed: the call exists under another business.
    if (!row) throw createError('RECGATE_FORBIDDEN', { message: 'The call belongs to another business' });
    return rowToRecord(row);
  }

  async setResolution(callSid: CallSid, resolution: RecordingResolution): Promise<void> {
    const params = [requireCallSid(callSid), ...resolutionParams(resolution)];
    await this.#wrote(() => this.#query(SQL.setResolution, params));
  }

  async setResolutionByRecording(recordingSid: RecordingSid, resolution: RecordingResolution): Promise<void> {
    const params = [requireRecordingSid(recordingSid), ...resolutionParams(resolution)];
    await this.#wrote(() => this.#query(SQL.setResolutionByRecording, params));
  }

  async markPurged(callSid: CallSid, recordingSid: RecordingSid | null): Promise<number> {
    const params = [
      requireCallSid(callSid),
      recordingSid === null ? null : requireRecordingSid(recordingSid),
      new Date().toISOString(),
    ];
    const rows = await this.#wrote(() => this.#query<{ call_sid: string }>(SQL.markPurged, params));
    return rows.length;
  }

  async isPurged(recordingSid: RecordingSid): Promise<boolean> {
    const rows = await this.#query<{ purged: number }>(SQL.isPurged, [requireRecordingSid(recordingSid)]);
    return rows.length > 0;
  }

  async recordPlays(plays: readonly PlayRecord[]): Promise<void> {
    if (plays.length === 0) return;
    const checked = plays.map(normalizePlay);
    await this.#query(SQL.recordPlays, [
      checked.map((p) => p.playedAt),
      checked.map((p) => p.businessId),
      checked.map((p) => p.callSid),
      checked.map((p) => p.recordingSid),
      checked.map((p) => p.bytes),
      checked.map((p) => p.status),
      checked.map((p) => p.requestId),
    ]);
  }

  async listPlays(callSid: CallSid, options: ListOptions): Promise<PlayPage> {
    const limit = parseLimit(options?.limit);
    const params: unknown[] = [requireCallSid(callSid), limit + 1];
    const rows =
      options?.cursor == null
        ? await this.#query<PlayRow>(SQL.firstPlays, params)
        : await this.#query<PlayRow>(SQL.olderPlays, [...params, decodePlayCursor(options.cursor)]);
    return toPlayPage(rows, limit);
  }

  async list(businessId: string, options: ListOptions): Promise<CallPage> {
    const business = requireBusinessId(businessId);
    const limit = parseLimit(options?.limit);
    const cursor = options?.cursor == null ? undefined : decodeCursor(options.cursor);
    let rows: CallRow[];
    if (cursor === undefined) {
      rows = await this.#query(SQL.firstPage, [business, limit + 1]);
    } else {
      const after = [business, limit + 1, cursor.createdAt, cursor.callSid];
      if (cursor.startedAt === null) rows = await this.#query(SQL.afterUnstarted, after);
      else {
        // Two reads without a shared snapshot: an undated call registered in between shows up as if it had
        // been there before, which is what a later page would show anyway; none can appear twice.
        rows = await this.#query(SQL.afterStarted, [...after, cursor.startedAt]);
        if (rows.length <= limit) {
          rows = rows.concat(await this.#query(SQL.firstUnstarted, [business, limit + 1 - rows.length]));
        }
      }
    }
    return toPage(rows, limit);
  }

  async schemaVersion(): Promise<number> {
    // Resolved through the connection's search_path, so the call log's own schema.
    const [table] = await this.#query<{ found: string | null }>(
      "SELECT to_regclass('schema_migrations')::text AS found",
      [],
    );
    if (table?.found == null) return 0;
    const [row] = await this.#query<{ version: number }>(
      'SELECT coalesce(max(version), 0)::integer AS version FROM schema_migrations',
      [],
    );
    return Number(row?.version ?? 0);
  }

  async ping(): Promise<boolean> {
    if (this.#closed) return false;
    try {
      await this.#pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  /** Ends the pool after running queries finish; idempotent. Later calls reject with RECGATE_DATABASE_ERROR. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#pool.end();
    } catch (err) {
      throw databaseError(err);
    }
  }
}

function resolutionParams(resolution: RecordingResolution): unknown[] {
  const r = normalizeResolution(resolution);
  return [
    r.recordingState,
    r.recordingSid.set,
    r.recordingSid.value,
    r.recordingOwnerCallSid.set,
    r.recordingOwnerCallSid.value,
    r.recordingSize.set,
    r.recordingSize.value,
    r.recordingDurationS.set,
    r.recordingDurationS.value,
    new Date().toISOString(),
    r.recordingStatus.set,
    r.recordingStatus.value,
  ];
}

/** A stable 64-bit advisory lock key per schema, so that migrations of different schemas do not queue. */
function migrationLockKey(schema: string | undefined): string {
  const digest = createHash('sha256')
    .update(`recgate:call-log:migrate:${schema ?? ''}`)
    .digest();
  return digest.readBigInt64BE(0).toString();
}
