import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { openCallLog, parseDatabaseUrl } from '../../src/call-log/index.js';
import { POSTGRES_MIGRATIONS } from '../../src/call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/call-log/migrations/sqlite-migrations.js';
import { runDoctor } from '../../src/cli/doctor.js';
import {
  DEFAULT_ACCOUNT_SID,
  DEFAULT_AUTH_TOKEN,
  type Emulator,
  startEmulator,
} from '../../src/emulator/index.js';
import { describeFileSystem, fileSystemOf, slowCreatesNote } from '../../src/io/file-system.js';
import { tempDir } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { mountReadOnly, mountTmpfs } from '../helpers/read-only-mount.js';
import { recgateArgs } from '../helpers/recgate-command.js';

const SECRET = 'doctor-test-secret-'.padEnd(40, 'z');

interface Outcome {
  code: number;
  lines: string[];
}

/** Runs `recgate doctor` in a child process; async, so the in-process emulator keeps answering. */
async function doctor(args: string[], env: Record<string, string | undefined>): Promise<Outcome> {
  const clean: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(clean)) if (/^(RECGATE_|TWILIO_)/.test(name)) delete clean[name];
  for (const [name, value] of Object.entries(env)) if (value !== undefined) clean[name] = value;
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [...recgateArgs(), 'doctor', ...args], {
      env: clean,
      timeout: 60_000,
    });
    return { code: 0, lines: stdout.trim().split('\n') };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    assert.equal(typeof e.code, 'number', `doctor did not exit: ${e.stderr}`);
    return { code: e.code!, lines: (e.stdout ?? '').trim().split('\n') };
  }
}

function line(outcome: Outcome, check: string): string {
  const found = outcome.lines.find((l) => new RegExp(`^\\S+\\s+${check}\\s`).test(l));
  assert.ok(found, `no line for ${check} in:\n${outcome.lines.join('\n')}`);
  return found;
}

describe('recgate doctor', () => {
  let emulator: Emulator;
  let env: Record<string, string>;
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'recgate-doctor-'));
    emulator = await startEmulator({ port: 0 });
    env = {
      RECGATE_JWT_SECRET: SECRET,
      TWILIO_ACCOUNT_SID: DEFAULT_ACCOUNT_SID,
      TWILIO_AUTH_TOKEN: DEFAULT_AUTH_TOKEN,
      TWILIO_API_BASE: emulator.url,
    };
  });
  after(async () => {
    await emulator.close();
    await rm(root, { recursive: true, force: true });
  });

  it('passes every check on a fresh data dir without --demo, and leaves no probe behind', async (t) => {
    const dir = tempDir(t);
    const out = await doctor(['--data-dir', dir], env);
    assert.equal(out.code, 0, out.lines.join('\n'));
    for (const check of ['config', 'data dir', 'lock', 'database', 'twilio']) {
      assert.match(line(out, check), /^ok\s/);
    }
    assert.match(line(out, 'lock'), /exclude across processes.*dead holder's lock is released/);
    // The volume's file system, with a note (still a pass) where new files are slow.
    const fileSystem = fileSystemOf(path.join(dir, 'recordings'));
    const note = slowCreatesNote(fileSystem);
    assert.ok(
      line(out, 'data dir').endsWith(
        `${fileSystem === undefined ? '' : ` on ${describeFileSystem(fileSystem)}`}${note === undefined ? '' : `; note: ${note}`}`,
      ),
      line(out, 'data dir'),
    );
    assert.match(
      line(out, 'database'),
      new RegExp(
        `answers; schema at version ${SQLITE_MIGRATIONS.at(-1)!.version}, the latest this recgate knows$`,
      ),
    );
    assert.equal(out.lines.at(-1), 'all 5 checks passed');
    assert.deepEqual(readdirSync(path.join(dir, 'recordings')), []);
  });

  it('names the read-only data dir and exits 1', async (t) => {
    // Mounted under the suite's directory, which is removed after the mount's own hook has unmounted it.
    const dir = path.join(root, 'read-only');
    if (!mountReadOnly(t, dir)) return;
    const out = await doctor(['--data-dir', dir], env);
    assert.equal(out.code, 1);
    assert.match(
      line(out, 'data dir'),
      new RegExp(
        `^FAIL .*${dir}/recordings is not writable.*; ${dir} is on a read-only file system \\(EROFS\\)$`,
      ),
    );
    assert.match(line(out, 'lock'), /^skip\s+lock\s+needs a writable data dir/);
    assert.match(out.lines.at(-1)!, /checks failed/);
  });

  it('names a data dir volume short of room and exits 1, and still checks the lock there', async (t) => {
    const dir = path.join(root, 'small');
    if (!mountTmpfs(t, dir, { size: '1m' })) return;
    const out = await doctor(['--data-dir', dir], env);
    assert.equal(out.code, 1);
    assert.match(
      line(out, 'data dir'),
      new RegExp(
        `^FAIL .*${dir}/recordings is writable but its volume has only .* free of 1\\.0 MiB \\(needs 64\\.0 MiB\\)$`,
      ),
    );
    assert.match(line(out, 'lock'), /^ok\s/);
    assert.match(out.lines.at(-1)!, /^1 of 5 checks failed/);
  });

  it('names an unreachable database and exits 1 without waiting for the check timeout', async (t) => {
    // Nothing listens on port 1: the connection is refused at once.
    const url = 'postgres://postgres@127.0.0.1:1/test';
    const out = await doctor(['--data-dir', tempDir(t), '--database', url, '--lock-backend', 'fs'], env);
    assert.equal(out.code, 1);
    assert.match(
      line(out, 'database'),
      /^FAIL\s+database\s+cannot open the call log postgres:\/\/postgres@127\.0\.0\.1:1\/test: .*ECONNREFUSED/,
    );
    assert.match(line(out, 'lock'), /^ok\s/);
    assert.match(line(out, 'twilio'), /^ok\s/);
  });

  it('fails a database whose schema a newer recgate migrated, naming both versions', async (t) => {
    const dir = tempDir(t);
    const latest = SQLITE_MIGRATIONS.at(-1)!.version;
    const file = parseDatabaseUrl(undefined, dir);
    assert.equal(file.kind, 'sqlite');
    const log = await openCallLog(undefined, dir);
    await log.close();
    const db = new Database(file.path);
    db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(
      latest + 1,
      new Date().toISOString(),
    );
    db.close();
    const out = await doctor(['--data-dir', dir], env);
    assert.equal(out.code, 1);
    assert.match(
      line(out, 'database'),
      new RegExp(
        `^FAIL\\s+database\\s+SQLite ${file.path} has schema version ${latest + 1}, newer than this recgate's latest \\(${latest}\\)`,
      ),
    );
  });

  it('names refused Twilio credentials, and an upstream that does not answer', async (t) => {
    const refused = await doctor(['--data-dir', tempDir(t)], { ...env, TWILIO_AUTH_TOKEN: 'wrong' });
    assert.equal(refused.code, 1);
    assert.match(line(refused, 'twilio'), /^FAIL .*refused the credentials of account AC/);
    assert.match(line(refused, 'database'), /^ok\s/);
    const dead = await doctor(['--data-dir', tempDir(t), '--twilio-api-base', 'http://127.0.0.1:9'], env);
    assert.equal(dead.code, 1);
    assert.match(line(dead, 'twilio'), /^FAIL .*127\.0\.0\.1:9 did not answer/);
  });

  it('fails the lock check when a second process can take a held lock', async (t) => {
    // A probe that says it holds the lock without taking it stands for storage whose locks do not exclude.
    const lines: string[] = [];
    const ok = await runDoctor({
      flags: { dataDir: tempDir(t) },
      env,
      selfCommand: ['-e', "process.stdout.write('held\\n'); setInterval(() => {}, 1000)"],
      write: (l) => lines.push(l),
    });
    assert.equal(ok, false);
    assert.match(
      line({ code: 1, lines }, 'lock'),
      /^FAIL .*a second process took the fs lock that another process held/,
    );
  });

  it('reports a bad configuration and skips what needs it', async (t) => {
    const out = await doctor(['--data-dir', tempDir(t)], { ...env, RECGATE_JWT_SECRET: undefined });
    assert.equal(out.code, 1);
    assert.match(line(out, 'config'), /^FAIL .*RECGATE_JWT_SECRET is required/);
    for (const check of ['data dir', 'lock', 'database', 'twilio']) assert.match(line(out, check), /^skip\s/);
  });

  it('checks the PostgreSQL lock and call log with --database postgres://', async (t) => {
    const pg = await findPostgres();
    if ('reason' in pg) return postgresUnavailable(t, pg.reason);
    const out = await doctor(['--data-dir', tempDir(t), '--database', pg.url], env);
    assert.equal(out.code, 0, out.lines.join('\n'));
    assert.match(line(out, 'lock'), /^ok .*PostgreSQL advisory locks exclude across sessions/);
    assert.match(
      line(out, 'database'),
      new RegExp(
        `^ok\\s+database\\s+PostgreSQL answers; schema at version ${POSTGRES_MIGRATIONS.at(-1)!.version},`,
      ),
    );
  });
});
