/**
 * Picks the call log backend from the `--database` setting (`RECGATE_DATABASE_URL`) and migrates it.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createError } from '../errors.js';
import type { CallLog } from './call-log.js';
import { databaseError } from './common.js';

export type { CallLog } from './call-log.js';
export type { PostgresCallLogOptions } from './postgres.js';
export type { SqliteCallLogOptions } from './sqlite.js';

/** The SQLite file used when no database URL is given. */
export const DEFAULT_DATABASE_FILE = 'recgate.db';

export type DatabaseTarget =
  | { kind: 'sqlite'; path: string }
  | { kind: 'postgres'; connectionString: string; schema?: string };

/**
 * Reads a `--database` value:
 * - absent or empty: the SQLite file `{dataDir}/recgate.db`;
 * - `postgres://…` or `postgresql://…`: PostgreSQL; an optional `schema` query parameter names the schema
 *   (e.g. `postgres://host/db?schema=recgate`), otherwise the server's default search_path is used;
 * - `sqlite:PATH`, `sqlite://PATH` or `sqlite::memory:`: SQLite (`sqlite:///abs/file.db` is absolute);
 * - `file:PATH` or a `file:///abs/file.db` URL: SQLite.
 * Relative SQLite paths resolve against the working directory. Anything else throws
 * RECGATE_INVALID_REQUEST naming `--database`; the message never repeats the URL, which may hold a password.
 */
export function parseDatabaseUrl(url: string | undefined, dataDir: string): DatabaseTarget {
  if (url === undefined || url.trim() === '') {
    return { kind: 'sqlite', path: resolve(dataDir, DEFAULT_DATABASE_FILE) };
  }
  const bad = (why: string) =>
    createError('RECGATE_INVALID_REQUEST', {
      message: `--database (RECGATE_DATABASE_URL) ${why}; use postgres://…, postgresql://…, sqlite:PATH or file:PATH`,
    });
  if (/^postgres(?:ql)?:\/\//i.test(url)) {
    const schemaParam = /[?&]schema=([^&#]*)/.exec(url);
    if (!schemaParam) return { kind: 'postgres', connectionString: url };
    const connectionString = url.replace(/([?&])schema=[^&#]*&?/, '$1').replace(/[?&](?=#|$)/, '');
    return { kind: 'postgres', connectionString, schema: decodeURIComponent(schemaParam[1]!) };
  }
  if (/^sqlite:/i.test(url)) {
    const rest = url.slice('sqlite:'.length).replace(/^\/\//, '');
    if (rest === '') throw bad('names no SQLite file');
    return { kind: 'sqlite', path: rest === ':memory:' ? rest : resolve(rest) };
  }
  if (/^file:/i.test(url)) {
    if (url.startsWith('file://')) {
      try {
        return { kind: 'sqlite', path: fileURLToPath(url) };
      } catch {
        throw bad('is not a valid file: URL');
      }
    }
    const rest = url.slice('file:'.length);
    if (rest === '') throw bad('names no SQLite file');
    return { kind: 'sqlite', path: resolve(rest) };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw bad(scheme ? `has an unsupported scheme "${scheme}:"` : 'is not a database URL');
}

/**
 * Opens the call log that `url` names (see {@link parseDatabaseUrl}) and runs its migrations. For SQLite
 * the file's directory is created if missing. Throws RECGATE_INVALID_REQUEST for a bad URL and
 * RECGATE_DATABASE_ERROR if the database cannot be opened or migrated.
 */
export async function openCallLog(url: string | undefined, dataDir: string): Promise<CallLog> {
  const target = parseDatabaseUrl(url, dataDir);
  let log: CallLog;
  // Each backend's driver is loaded only when used: pg costs a SQLite deployment ~15 MB of memory.
  if (target.kind === 'postgres') {
    const { PostgresCallLog } = await import('./postgres.js');
    log = new PostgresCallLog(
      target.schema === undefined
        ? { connectionString: target.connectionString }
        : { connectionString: target.connectionString, schema: target.schema },
    );
  } else {
    if (target.path !== ':memory:') {
      try {
        mkdirSync(dirname(target.path), { recursive: true });
      } catch (err) {
        throw databaseError(err);
      }
    }
    const { SqliteCallLog } = await import('./sqlite.js');
    log = new SqliteCallLog(target.path);
  }
  try {
    await log.migrate();
  } catch (err) {
    await log.close().catch(() => {});
    throw err;
  }
  return log;
}
