/**
 * Picks the call log backend from the `--database` setting (`RECGATE_DATABASE_URL`) and migrates it.
 */
import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { type DatabaseTarget, parseDatabaseUrl } from '../config/database-url.js';
import { createError, isRecgateError, type RecgateError } from '../errors.js';
import type { CallLog } from './call-log.js';

export {
  type DatabaseTarget,
  DEFAULT_DATABASE_FILE,
  isPostgresUrl,
  parseDatabaseUrl,
} from '../config/database-url.js';
export type { CallLog } from './call-log.js';
export type { PostgresCallLogOptions } from './postgres.js';
export type { SqliteCallLogOptions } from './sqlite.js';

/**
 * Opens the call log that `url` names (see {@link parseDatabaseUrl}) and runs its migrations. For SQLite
 * the file's directory is created if missing. Throws RECGATE_INVALID_REQUEST for a bad URL and
 * RECGATE_DATABASE_ERROR if the database cannot be opened or migrated. That error is meant for the operator
 * at start-up: its message names the SQLite file, or the PostgreSQL user, host and database (never the
 * password nor the query string), and the cause, e.g.
 * `cannot open the call log /data/recgate.db: EROFS: read-only file system`.
 */
export async function openCallLog(url: string | undefined, dataDir: string): Promise<CallLog> {
  const target = parseDatabaseUrl(url, dataDir);
  let log: CallLog | undefined;
  try {
    // Each backend's driver is loaded only when used: pg costs a SQLite deployment ~15 MB of memory.
    if (target.kind === 'postgres') {
      const { PostgresCallLog } = await import('./postgres.js');
      log = new PostgresCallLog(
        target.schema === undefined
          ? { connectionString: target.connectionString }
          : { connectionString: target.connectionString, schema: target.schema },
      );
    } else {
      if (target.path !== ':memory:') mkdirSync(dirname(target.path), { recursive: true });
      const { SqliteCallLog } = await import('./sqlite.js');
      log = new SqliteCallLog(target.path);
    }
    await log.migrate();
    return log;
  } catch (err) {
    await log?.close().catch(() => {});
    throw openError(target, err);
  }
}

/** Where the call log lives, for an operator: never a password, never the query string (it may hold one). */
function describeDatabaseTarget(target: DatabaseTarget): string {
  if (target.kind === 'sqlite') return target.path;
  try {
    const u = new URL(target.connectionString);
    const user = u.username ? `${u.username}@` : '';
    const schema = target.schema === undefined ? '' : ` (schema ${target.schema})`;
    return `${u.protocol}//${user}${u.host}${u.pathname}${schema}`;
  } catch {
    return 'the PostgreSQL database';
  }
}

function openError(target: DatabaseTarget, err: unknown): RecgateError {
  // Option errors (a bad ?schema=) already name what is wrong.
  if (isRecgateError(err) && err.code !== 'RECGATE_DATABASE_ERROR') return err;
  const cause = isRecgateError(err) && err.cause !== undefined ? err.cause : err;
  let why =
    target.kind === 'sqlite' ? (sqliteOsCause(target.path, cause) ?? describe(cause)) : describe(cause);
  if (target.kind === 'postgres') {
    for (const secret of passwordForms(target.connectionString)) why = why.replaceAll(secret, '***');
  }
  return createError('RECGATE_DATABASE_ERROR', {
    message: `cannot open the call log ${describeDatabaseTarget(target)}: ${why}`,
    cause,
  });
}

/**
 * SQLite reports a file it cannot open or write as SQLITE_CANTOPEN or SQLITE_READONLY without the reason,
 * and a recursive mkdir on a read-only volume fails with ENOENT. The operating system's answer for the
 * nearest existing directory (WAL mode creates files beside the database) and for the file says why, e.g.
 * EROFS or EACCES.
 */
function sqliteOsCause(path: string, err: unknown): string | undefined {
  const { code, syscall } = (err ?? {}) as NodeJS.ErrnoException;
  const fromMkdir = syscall === 'mkdir';
  if (path === ':memory:' || !(fromMkdir || /^SQLITE_(CANTOPEN|READONLY|PERM|IOERR)/.test(String(code)))) {
    return undefined;
  }
  let dir = dirname(path);
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  try {
    accessSync(dir, constants.W_OK);
    if (fromMkdir || !existsSync(path)) return undefined;
    if (statSync(path).isDirectory()) return 'it is a directory';
    accessSync(path, constants.R_OK | constants.W_OK);
  } catch (probe) {
    return describe(probe);
  }
  return undefined;
}

/**
 * One line for a driver or system error: `EROFS: read-only file system` for a system call (Node's message
 * without the call and path, which the caller names already), else the message and code.
 */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const { code, syscall } = err as NodeJS.ErrnoException;
  if (typeof code === 'string' && syscall && err.message.startsWith(`${code}: `)) {
    const at = err.message.indexOf(`, ${syscall}`);
    return at > 0 ? err.message.slice(0, at) : err.message;
  }
  // A connection to a name with several addresses fails with an AggregateError whose own message is empty.
  const message =
    err.message ||
    (err instanceof AggregateError ? err.errors.map((e) => describe(e)).join('; ') : '') ||
    err.name;
  return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
}

/** The URL's password as written and decoded: drivers do not echo it, and this keeps it that way. */
function passwordForms(connectionString: string): string[] {
  try {
    const raw = new URL(connectionString).password;
    return raw ? [raw, decodeURIComponent(raw)] : [];
  } catch {
    return [];
  }
}
