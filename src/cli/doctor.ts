/**
 * `recgate doctor`: checks, one line each, what `recgate serve` needs from this machine, with the same
 * configuration (flags over environment), and exits non-zero when any check fails. It changes nothing an
 * operator would notice: the call log is opened and migrated exactly as `serve` would at start, and every
 * probe (a write-check file, a lock on a probe id) is removed again.
 *
 * The checks, in order (a check whose prerequisite failed is reported as skipped, not run):
 * 1. **config**: the settings load and validate;
 * 2. **data dir**: the recordings directory exists or can be made, is writable by this user, and its volume
 *    has room ({@link MIN_FREE_BYTES}); the line names the volume's file system, with a note (still a pass)
 *    for one that makes cold downloads cost more CPU (`../io/file-system.ts`);
 * 3. **lock**: the download lock really excludes across two processes on this storage: a child process
 *    takes a probe lock, this process must fail to take it, and after the child is killed (no clean-up) it
 *    must get it, because the backend releases a dead holder's lock itself;
 * 4. **database**: the call log is reachable, migrated, at the schema version this code knows as its latest
 *    (read back from the database: one a newer recgate migrated is a downgrade, and fails), and answers a
 *    query;
 * 5. **twilio**: the credentials are accepted, by one authenticated request.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import path from 'node:path';
import { openCallLog, parseDatabaseUrl } from '../call-log/index.js';
import { POSTGRES_MIGRATIONS } from '../call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../call-log/migrations/sqlite-migrations.js';
import { type Config, type ConfigInput, loadConfig, recordingsDir } from '../config/config.js';
import { isRecgateError } from '../errors.js';
import { describeFileSystem, fileSystemOf, slowCreatesNote } from '../io/file-system.js';
import { ensureWritableDir } from '../recordings/index.js';
import { FsLocker } from '../recordings/lock/fs.js';
import type { Locker } from '../recordings/lock/lock.js';
import { lockBackendOf } from '../runtime.js';
import { parseCallSid } from '../sid.js';
import { TwilioClient } from '../upstream/twilio-client.js';

/** Free space below which the data dir check fails: room for a few long recordings and the call log. */
export const MIN_FREE_BYTES = 64 * 1024 * 1024;
/** How long one check may take before it counts as failed. */
const CHECK_TIMEOUT_MS = 15_000;
/** A call SID that no account has: the credentials check asks for it and expects "not found". */
const PROBE_CALL_SID = parseCallSid(`CA${'0'.repeat(32)}`);

/** The hidden sub-command that runs {@link lockProbeChild} in the probe's child process. */
export const LOCK_PROBE_COMMAND = '__lock-probe';
/** The environment variable that tells the probe child what to lock on. */
const LOCK_PROBE_ENV = 'RECGATE_LOCK_PROBE';

export interface CheckResult {
  name: string;
  status: 'pass' | 'fail' | 'skip';
  detail: string;
}

export interface DoctorOptions {
  /** Flags given on the command line (they win over the environment). */
  flags: ConfigInput;
  env?: NodeJS.ProcessEnv;
  /** How to start this CLI again in a child process: the Node binary's arguments before the sub-command. */
  selfCommand?: readonly string[];
  /** Where the report goes, line by line. */
  write: (line: string) => void;
}

interface Check {
  name: string;
  run(config: Config): Promise<string>;
}

/** Runs every check and writes one line per check and a summary; resolves to whether all passed. */
export async function runDoctor(options: DoctorOptions): Promise<boolean> {
  const results: CheckResult[] = [];
  const report = (result: CheckResult) => {
    results.push(result);
    const label = { pass: 'ok  ', fail: 'FAIL', skip: 'skip' }[result.status];
    options.write(`${label}  ${result.name.padEnd(9)} ${result.detail}`);
  };
  let config: Config;
  try {
    config = loadConfig(options.flags, options.env ?? process.env);
    report({ name: 'config', status: 'pass', detail: describeConfig(config) });
  } catch (err) {
    report({ name: 'config', status: 'fail', detail: messageOf(err) });
    for (const check of checks(options)) {
      report({ name: check.name, status: 'skip', detail: 'needs a valid configuration' });
    }
    return summarize(results, options.write);
  }
  // Whether the data dir can be written; a volume short of room still holds a probe lock file.
  let dataDirOk = true;
  for (const check of checks(options)) {
    if (check.name === 'lock' && !dataDirOk && lockBackendOf(config) === 'fs') {
      report({ name: check.name, status: 'skip', detail: 'needs a writable data dir' });
      continue;
    }
    try {
      const detail = await withTimeout(check.run(config), `${check.name} check`);
      report({ name: check.name, status: 'pass', detail });
    } catch (err) {
      if (check.name === 'data dir' && !(err instanceof LowSpace)) dataDirOk = false;
      report({ name: check.name, status: 'fail', detail: messageOf(err) });
    }
  }
  return summarize(results, options.write);
}

function summarize(results: CheckResult[], write: (line: string) => void): boolean {
  const failed = results.filter((r) => r.status === 'fail').length;
  const passed = results.filter((r) => r.status === 'pass').length;
  write(
    failed === 0
      ? `all ${passed} checks passed`
      : `${failed} of ${results.length} checks failed${passed > 0 ? `, ${passed} passed` : ''}`,
  );
  return failed === 0;
}

function checks(options: DoctorOptions): Check[] {
  return [
    { name: 'data dir', run: checkDataDir },
    { name: 'lock', run: (config) => checkLock(config, options.selfCommand ?? defaultSelfCommand()) },
    { name: 'database', run: checkDatabase },
    { name: 'twilio', run: checkTwilio },
  ];
}

function describeConfig(config: Config): string {
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  return `call log ${database.kind === 'postgres' ? 'PostgreSQL' : 'SQLite'}, lock ${lockBackendOf(
    config,
  )}, data dir ${config.dataDir}`;
}

async function checkDataDir(config: Config): Promise<string> {
  const dir = recordingsDir(config);
  try {
    ensureWritableDir(dir);
  } catch (err) {
    throw new Error(`${messageOf(err)}${await nearestRefusal(dir)}`);
  }
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  const total = fs.blocks * fs.bsize;
  const uid = process.getuid?.();
  const room = `${formatBytes(free)} free of ${formatBytes(total)}`;
  if (free < MIN_FREE_BYTES) {
    throw new LowSpace(
      `${dir} is writable but its volume has only ${room} (needs ${formatBytes(MIN_FREE_BYTES)})`,
    );
  }
  const fileSystem = fileSystemOf(dir);
  const note = slowCreatesNote(fileSystem);
  return `${dir} is writable${uid === undefined ? '' : ` by uid ${uid}`}; ${room}${
    fileSystem === undefined ? '' : ` on ${describeFileSystem(fileSystem)}`
  }${note === undefined ? '' : `; note: ${note}`}`;
}

/** The data dir is writable, but its volume has less than {@link MIN_FREE_BYTES} free. */
class LowSpace extends Error {}

/**
 * What refuses writes on the way to `dir`: the nearest existing directory and the error `access(W_OK)`
 * gives there (EROFS for a read-only mount, EACCES for ownership), which names the cause more plainly than a
 * failed recursive mkdir does.
 */
async function nearestRefusal(dir: string): Promise<string> {
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      await access(at, constants.F_OK);
    } catch {
      if (path.dirname(at) === at) return '';
      continue;
    }
    try {
      await access(at, constants.W_OK);
      return '';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'EROFS' ? 'is on a read-only file system' : 'refuses writes';
      return `; ${at} ${why} (${code})`;
    }
  }
}

async function checkLock(config: Config, selfCommand: readonly string[]): Promise<string> {
  const backend = lockBackendOf(config);
  const id = `doctor-${process.pid}-${randomBytes(4).toString('hex')}`;
  const target = lockTargetOf(config);
  const { locker, close } = await openLocker(target);
  // The target goes by environment, not argv: a database URL may hold a password.
  const child = spawn(process.execPath, [...selfCommand, LOCK_PROBE_COMMAND, id], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [LOCK_PROBE_ENV]: JSON.stringify(target) },
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  try {
    await childHolds(child, () => stderr);
    const lock = locker.newLock(id);
    if (await lock.tryLock()) {
      await lock.unlock();
      throw new Error(
        `a second process took the ${backend} lock that another process held: this storage does not ` +
          `support the locks recgate needs${backend === 'fs' ? ' (use --lock-backend postgres)' : ''}`,
      );
    }
    child.kill('SIGKILL');
    await once(child, 'exit');
    if (!(await retryTake(lock))) {
      throw new Error(`the ${backend} lock of a killed process was not released`);
    }
    await lock.unlock();
    return backend === 'fs'
      ? `file locks exclude across processes in ${recordingsDir(config)}, and a dead holder's lock is released`
      : "PostgreSQL advisory locks exclude across sessions, and a dead holder's lock is released";
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await close();
  }
}

/** Waits for the child's "held" line; fails with what it wrote if it exits first. */
async function childHolds(child: ChildProcess, stderr: () => string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('held\n')) resolve();
    });
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(
        new Error(
          `the probe process ended (${signal ?? `exit ${code}`}) before it held the lock: ${
            stderr().trim() || out.trim() || 'no output'
          }`,
        ),
      ),
    );
  });
}

/** A dead holder's lock is released by the kernel at once, by PostgreSQL when it notices the session end. */
async function retryTake(lock: ReturnType<Locker['newLock']>): Promise<boolean> {
  for (let attempt = 0; attempt < 50; attempt++) {
    if (await lock.tryLock()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** What the lock check locks on: the recordings directory, or the call log's PostgreSQL. */
interface LockTarget {
  backend: 'fs' | 'postgres';
  dataDir: string;
  databaseUrl: string | undefined;
}

function lockTargetOf(config: Config): LockTarget {
  return { backend: lockBackendOf(config), dataDir: config.dataDir, databaseUrl: config.databaseUrl };
}

async function openLocker(target: LockTarget): Promise<{ locker: Locker; close: () => Promise<void> }> {
  if (target.backend === 'fs') {
    return { locker: new FsLocker({ dir: recordingsDir(target) }), close: async () => {} };
  }
  const database = parseDatabaseUrl(target.databaseUrl, target.dataDir);
  if (database.kind !== 'postgres') throw new Error('the postgres lock needs a postgres:// --database');
  // The fencing table lives in the call log's schema: migrating creates the schema if it is missing.
  await (await openCallLog(target.databaseUrl, target.dataDir)).close();
  const { PostgresLocker } = await import('../recordings/lock/postgres.js');
  const locker = new PostgresLocker({
    connectionString: database.connectionString,
    ...(database.schema === undefined ? {} : { schema: database.schema }),
  });
  return { locker, close: () => locker.close() };
}

/**
 * The child side of the lock check: takes the probe lock, says `held`, and keeps it until it is killed.
 * Run by `recgate __lock-probe ID` with the parent's {@link LockTarget} in `RECGATE_LOCK_PROBE`.
 */
export async function lockProbeChild(id: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const raw = env[LOCK_PROBE_ENV];
  if (raw === undefined) throw new Error(`${LOCK_PROBE_COMMAND} is run by recgate doctor only`);
  const { locker } = await openLocker(JSON.parse(raw) as LockTarget);
  const lock = locker.newLock(id);
  if (!(await lock.tryLock())) throw new Error(`probe lock ${id} is already held`);
  process.stdout.write('held\n');
  // Held until the parent kills this process (the backend must release it without our help); the timer
  // keeps the event loop alive, which a pending promise alone does not. An orphaned probe ends by itself.
  await new Promise<void>((resolve) => {
    const alive = setInterval(() => {
      if (process.ppid !== 1) return;
      clearInterval(alive);
      resolve();
    }, 1000);
  });
}

/**
 * Opens and migrates the call log as `serve` does, then reads the schema version back from the database
 * and runs one query. A version above the code's latest migration means a newer recgate migrated the
 * database: this one would run on a schema it does not know, so the check fails, naming both versions.
 */
async function checkDatabase(config: Config): Promise<string> {
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  const migrations = database.kind === 'postgres' ? POSTGRES_MIGRATIONS : SQLITE_MIGRATIONS;
  const latest = migrations.at(-1)?.version ?? 0;
  const where = database.kind === 'postgres' ? 'PostgreSQL' : `SQLite ${database.path}`;
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  let version: number;
  try {
    version = await callLog.schemaVersion();
    if (version > latest) {
      throw new Error(
        `${where} has schema version ${version}, newer than this recgate's latest (${latest}): a newer ` +
          'recgate migrated it, and going back is not supported; run that version or newer',
      );
    }
    if (version < latest) {
      throw new Error(`${where} is at schema version ${version} after migrating, not ${latest}`);
    }
    await callLog.getForBusiness('recgate-doctor', PROBE_CALL_SID);
  } finally {
    await callLog.close();
  }
  return `${where} answers; schema at version ${version}, the latest this recgate knows`;
}

async function checkTwilio(config: Config): Promise<string> {
  if (!config.twilioAccountSid) throw new Error('TWILIO_ACCOUNT_SID is not set');
  if (!config.twilioAuthToken && !config.twilioApiKey) {
    throw new Error('TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) is not set');
  }
  const client = new TwilioClient({
    baseUrl: config.twilioApiBase,
    accountSid: config.twilioAccountSid,
    authToken: config.twilioAuthToken,
    apiKey: config.twilioApiKey,
    apiSecret: config.twilioApiSecret,
    retry: { maxAttempts: 1 },
  });
  try {
    // Any answer but 401/403 proves the credentials; an unknown call is Twilio's 404, which getCall maps to
    // undefined.
    await client.getCall(PROBE_CALL_SID);
  } catch (err) {
    if (isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_AUTH') {
      throw new Error(
        `${config.twilioApiBase} refused the credentials of account ${config.twilioAccountSid}`,
      );
    }
    throw new Error(`${config.twilioApiBase} did not answer: ${messageOf(err)}`);
  } finally {
    await client.close();
  }
  return `${config.twilioApiBase} accepted the credentials of account ${config.twilioAccountSid}`;
}

function defaultSelfCommand(): string[] {
  return [...process.execArgv, process.argv[1]!];
}

async function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} took longer than ${CHECK_TIMEOUT_MS / 1000} s`)),
      CHECK_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function messageOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && isRecgateError(err) ? (err.cause as Error | undefined) : undefined;
  return cause?.message && !message.includes(cause.message) ? `${message} (${cause.message})` : message;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
