/**
 * The cache index in the call log's SQLite file (table `cached_files`, created by the call log's migration
 * 4), through its own better-sqlite3 connection. Like the call log, statements run inline and return settled
 * promises; WAL mode and `busy_timeout` let worker processes share the file.
 */
import type Database from 'better-sqlite3';
import { databaseError } from '../../call-log/common.js';
import { openSqliteFile } from '../../call-log/sqlite-file.js';
import type {
  CachedFile,
  CacheIndex,
  CacheTotals,
  OldestCursor,
  PlayCounts,
  TopFile,
} from './cache-index.js';

export interface SqliteCacheIndexOptions {
  /** How long a write waits for another process's write lock, ms. @default 5000 */
  busyTimeoutMs?: number;
}

interface Row {
  call_sid: string;
  size: number;
  last_played_ms: number;
  cached_at_ms: number;
}

const COLUMNS = 'call_sid, size, last_played_ms, cached_at_ms';

const SQL = {
  record: `
    INSERT INTO cached_files (${COLUMNS}) VALUES (@callSid, @size, @at, @at)
    ON CONFLICT (call_sid) DO UPDATE SET
      size = excluded.size, last_played_ms = excluded.last_played_ms, cached_at_ms = excluded.cached_at_ms`,
  backfill: `
    INSERT INTO cached_files (${COLUMNS}) VALUES (@callSid, @size, @lastPlayedMs, @cachedAtMs)
    ON CONFLICT (call_sid) DO NOTHING`,
  touch: 'UPDATE cached_files SET last_played_ms = ? WHERE call_sid = ? AND last_played_ms < ?',
  get: `SELECT ${COLUMNS} FROM cached_files WHERE call_sid = ?`,
  oldestFirst: `SELECT ${COLUMNS} FROM cached_files ORDER BY last_played_ms, call_sid LIMIT ?`,
  oldestAfter: `
    SELECT ${COLUMNS} FROM cached_files
    WHERE (last_played_ms, call_sid) > (?, ?)
    ORDER BY last_played_ms, call_sid LIMIT ?`,
  removeIf: 'DELETE FROM cached_files WHERE call_sid = ? AND last_played_ms = ?',
  remove: 'DELETE FROM cached_files WHERE call_sid = ?',
  totals: 'SELECT files, bytes FROM cache_totals WHERE id = 1',
  hit: 'UPDATE cached_files SET hits = hits + ? WHERE call_sid = ?',
  countPlays: 'UPDATE cache_plays SET hits = hits + ?, downloads = downloads + ? WHERE id = 1',
  playCounts: 'SELECT hits, downloads FROM cache_plays WHERE id = 1',
  top: `SELECT ${COLUMNS}, hits FROM cached_files ORDER BY hits DESC, call_sid LIMIT ?`,
} as const;

export class SqliteCacheIndex implements CacheIndex {
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();
  #closed = false;

  /** Opens the call log's database file at `path`; the call log must have migrated it. */
  constructor(path: string, options: SqliteCacheIndexOptions = {}) {
    this.#db = openSqliteFile(path, options.busyTimeoutMs);
  }

  record(callSid: string, size: number, atMs: number): Promise<void> {
    return this.#run(() => {
      this.#stmt(SQL.record).run({ callSid, size, at: atMs });
    });
  }

  backfill(files: readonly CachedFile[]): Promise<number> {
    return this.#run(() => {
      const insert = this.#stmt(SQL.backfill);
      return this.#db.transaction(() => {
        let inserted = 0;
        for (const file of files) inserted += insert.run(file).changes;
        return inserted;
      })();
    });
  }

  touch(plays: ReadonlyMap<string, number>): Promise<void> {
    return this.#run(() => {
      if (plays.size === 0) return;
      const update = this.#stmt(SQL.touch);
      this.#db.transaction(() => {
        for (const [callSid, at] of plays) update.run(at, callSid, at);
      })();
    });
  }

  get(callSid: string): Promise<CachedFile | undefined> {
    return this.#run(() => {
      const row = this.#stmt(SQL.get).get(callSid) as Row | undefined;
      return row && toFile(row);
    });
  }

  oldest(limit: number, after?: OldestCursor): Promise<CachedFile[]> {
    return this.#run(() => {
      const rows = (
        after === undefined
          ? this.#stmt(SQL.oldestFirst).all(limit)
          : this.#stmt(SQL.oldestAfter).all(after.lastPlayedMs, after.callSid, limit)
      ) as Row[];
      return rows.map(toFile);
    });
  }

  remove(callSid: string, lastPlayedMs?: number): Promise<boolean> {
    return this.#run(() => {
      const result =
        lastPlayedMs === undefined
          ? this.#stmt(SQL.remove).run(callSid)
          : this.#stmt(SQL.removeIf).run(callSid, lastPlayedMs);
      return result.changes > 0;
    });
  }

  countPlays(hits: ReadonlyMap<string, number>, downloads: number): Promise<void> {
    return this.#run(() => {
      let total = 0;
      const hit = this.#stmt(SQL.hit);
      this.#db.transaction(() => {
        for (const [callSid, n] of hits) {
          hit.run(n, callSid);
          total += n;
        }
        if (total > 0 || downloads > 0) this.#stmt(SQL.countPlays).run(total, downloads);
      })();
    });
  }

  playCounts(): Promise<PlayCounts> {
    return this.#run(() => {
      const row = this.#stmt(SQL.playCounts).get() as PlayCounts | undefined;
      return { hits: Number(row?.hits ?? 0), downloads: Number(row?.downloads ?? 0) };
    });
  }

  top(limit: number): Promise<TopFile[]> {
    return this.#run(() =>
      (this.#stmt(SQL.top).all(limit) as Array<Row & { hits: number }>).map((row) => ({
        ...toFile(row),
        hits: Number(row.hits),
      })),
    );
  }

  totals(): Promise<CacheTotals> {
    return this.#run(() => {
      const row = this.#stmt(SQL.totals).get() as { files: number; bytes: number } | undefined;
      return { files: row?.files ?? 0, bytes: row?.bytes ?? 0 };
    });
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#db.close();
    }
    return Promise.resolve();
  }

  #stmt(sql: string): Database.Statement {
    let stmt = this.#statements.get(sql);
    if (stmt === undefined) {
      stmt = this.#db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  #run<T>(fn: () => T): Promise<T> {
    try {
      if (this.#closed) throw new Error('the cache index is closed');
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(databaseError(err));
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
