/**
 * The cache index in the call log's PostgreSQL schema (table `cached_files`, created by the call log's
 * migration 4), through a small `pg` pool of its own with `search_path` set to that schema. Several hosts
 * share it; each method is one statement, so each is atomic.
 */
import type pg from 'pg';
import { databaseError } from '../../call-log/common.js';
import { schemaPool } from '../../call-log/schema-pool.js';
import type {
  CachedFile,
  CacheIndex,
  CacheTotals,
  OldestCursor,
  PlayCounts,
  TopFile,
} from './cache-index.js';

export interface PostgresCacheIndexOptions {
  /** A `postgres://` URL: the call log's. */
  connectionString: string;
  /** The call log's schema. @default the server's default search_path */
  schema?: string;
  /** Most connections. @default 2 */
  poolSize?: number;
}

interface Row {
  call_sid: string;
  size: string;
  last_played_ms: string;
  cached_at_ms: string;
}

const COLUMNS = 'call_sid, size, last_played_ms, cached_at_ms';

const SQL = {
  record: `
    INSERT INTO cached_files (${COLUMNS}) VALUES ($1, $2, $3, $3)
    ON CONFLICT (call_sid) DO UPDATE SET
      size = EXCLUDED.size, last_played_ms = EXCLUDED.last_played_ms, cached_at_ms = EXCLUDED.cached_at_ms`,
  backfill: `
    INSERT INTO cached_files (${COLUMNS})
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
    ON CONFLICT (call_sid) DO NOTHING`,
  // Sorted by SID so that two hosts touching overlapping sets lock rows in the same order (no deadlock).
  touch: `
    UPDATE cached_files AS f SET last_played_ms = p.at
    FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(call_sid, at) ORDER BY call_sid) AS p
    WHERE f.call_sid = p.call_sid AND f.last_played_ms < p.at`,
  get: `SELECT ${COLUMNS} FROM cached_files WHERE call_sid = $1`,
  oldestFirst: `SELECT ${COLUMNS} FROM cached_files ORDER BY last_played_ms, call_sid LIMIT $1`,
  oldestAfter: `
    SELECT ${COLUMNS} FROM cached_files
    WHERE (last_played_ms, call_sid) > ($2::bigint, $3::text)
    ORDER BY last_played_ms, call_sid LIMIT $1`,
  removeIf: 'DELETE FROM cached_files WHERE call_sid = $1 AND last_played_ms = $2',
  remove: 'DELETE FROM cached_files WHERE call_sid = $1',
  totals: 'SELECT files, bytes FROM cache_totals WHERE id = 1',
  // One statement: the rows (in SID order, as touch) and the counters row move together.
  countPlays: `
    WITH hit AS (
      UPDATE cached_files AS f SET hits = f.hits + p.n
      FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(call_sid, n) ORDER BY call_sid) AS p
      WHERE f.call_sid = p.call_sid
    )
    UPDATE cache_plays SET hits = hits + $3, downloads = downloads + $4 WHERE id = 1`,
  playCounts: 'SELECT hits, downloads FROM cache_plays WHERE id = 1',
  top: `SELECT ${COLUMNS}, hits FROM cached_files ORDER BY hits DESC, call_sid LIMIT $1`,
} as const;

export class PostgresCacheIndex implements CacheIndex {
  readonly #pool: pg.Pool;
  #closed = false;

  constructor(options: PostgresCacheIndexOptions) {
    this.#pool = schemaPool(options);
  }

  async record(callSid: string, size: number, atMs: number): Promise<void> {
    await this.#query(SQL.record, [callSid, size, atMs]);
  }

  async backfill(files: readonly CachedFile[]): Promise<number> {
    if (files.length === 0) return 0;
    const result = await this.#exec(SQL.backfill, [
      files.map((f) => f.callSid),
      files.map((f) => f.size),
      files.map((f) => f.lastPlayedMs),
      files.map((f) => f.cachedAtMs),
    ]);
    return result.rowCount ?? 0;
  }

  async touch(plays: ReadonlyMap<string, number>): Promise<void> {
    if (plays.size === 0) return;
    await this.#query(SQL.touch, [[...plays.keys()], [...plays.values()]]);
  }

  async get(callSid: string): Promise<CachedFile | undefined> {
    const [row] = await this.#query(SQL.get, [callSid]);
    return row && toFile(row);
  }

  async oldest(limit: number, after?: OldestCursor): Promise<CachedFile[]> {
    const rows =
      after === undefined
        ? await this.#query(SQL.oldestFirst, [limit])
        : await this.#query(SQL.oldestAfter, [limit, after.lastPlayedMs, after.callSid]);
    return rows.map(toFile);
  }

  async remove(callSid: string, lastPlayedMs?: number): Promise<boolean> {
    const result =
      lastPlayedMs === undefined
        ? await this.#exec(SQL.remove, [callSid])
        : await this.#exec(SQL.removeIf, [callSid, lastPlayedMs]);
    return (result.rowCount ?? 0) > 0;
  }

  async countPlays(hits: ReadonlyMap<string, number>, downloads: number): Promise<void> {
    let total = 0;
    for (const n of hits.values()) total += n;
    if (total === 0 && downloads === 0) return;
    await this.#exec(SQL.countPlays, [[...hits.keys()], [...hits.values()], total, downloads]);
  }

  async playCounts(): Promise<PlayCounts> {
    const row = (await this.#exec(SQL.playCounts, [])).rows[0] as
      | { hits: string; downloads: string }
      | undefined;
    return { hits: Number(row?.hits ?? 0), downloads: Number(row?.downloads ?? 0) };
  }

  async top(limit: number): Promise<TopFile[]> {
    const rows = (await this.#exec(SQL.top, [limit])).rows as Array<Row & { hits: string }>;
    return rows.map((row) => ({ ...toFile(row), hits: Number(row.hits) }));
  }

  async totals(): Promise<CacheTotals> {
    const result = await this.#exec(SQL.totals, []);
    const row = result.rows[0] as { files: string; bytes: string } | undefined;
    return { files: Number(row?.files ?? 0), bytes: Number(row?.bytes ?? 0) };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  async #query(sql: string, params: unknown[]): Promise<Row[]> {
    return (await this.#exec(sql, params)).rows as Row[];
  }

  async #exec(sql: string, params: unknown[]): Promise<pg.QueryResult> {
    if (this.#closed) throw databaseError(new Error('the cache index is closed'));
    try {
      return await this.#pool.query(sql, params);
    } catch (err) {
      throw databaseError(err);
    }
  }
}

function toFile(row: Row): CachedFile {
  return {
    callSid: row.call_sid,
    size: Number(row.size),
    lastPlayedMs: Number(row.last_played_ms),
    cachedAtMs: Number(row.cached_at_ms),
  };
}
