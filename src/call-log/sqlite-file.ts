/**
 * A better-sqlite3 connection on the call log's SQLite file, as the call log opens it and as the stores that
 * live beside it in the file (the cache index, the account mapping) do: WAL mode, and `busy_timeout` so a
 * write waits for another process's write lock instead of failing at once.
 */
import Database from 'better-sqlite3';
import { databaseError } from './common.js';

/**
 * Opens the file at `path` (the call log must have migrated it). Throws TypeError for a bad
 * `busyTimeoutMs`, RECGATE_DATABASE_ERROR when the file cannot be opened.
 */
export function openSqliteFile(path: string, busyTimeoutMs = 5000): Database.Database {
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new TypeError('options.busyTimeoutMs must be a non-negative integer');
  }
  let db: Database.Database;
  try {
    db = new Database(path, { timeout: busyTimeoutMs });
  } catch (err) {
    throw databaseError(err);
  }
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma('journal_mode = WAL');
    // NORMAL is durable across process crashes in WAL mode; only a power loss can drop the last commits.
    db.pragma('synchronous = NORMAL');
    return db;
  } catch (err) {
    db.close();
    throw databaseError(err);
  }
}
