/**
 * The one reader of `--database` (`RECGATE_DATABASE_URL`) values: the configuration validates with it, the
 * call log and the lock backends choose their backend with it.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createError } from '../errors.js';

const POSTGRES_URL = /^postgres(?:ql)?:\/\//i;

/** Whether `url` is a PostgreSQL URL (`postgres://…` or `postgresql://…`, any case). */
export function isPostgresUrl(url: string): boolean {
  return POSTGRES_URL.test(url);
}

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
  if (isPostgresUrl(url)) {
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
