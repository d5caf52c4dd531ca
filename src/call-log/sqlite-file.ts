/**
 * Another better-sqlite3 connection on the call log's SQLite file, for the stores that live beside the call
 * log in it (the cache index, the account mapping): WAL mode, and `busy_timeout` so a write waits for
 * another process's write lock instead of failing at once.
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
  try {
    const db = new Database(path, { timeout: busyTimeoutMs });
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    return db;
  } catch (err) {
    throw databaseError(err);
  }
}
