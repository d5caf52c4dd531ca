import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { SQLITE_MIGRATIONS } from '../../src/call-log/migrations/sqlite-migrations.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { isRecgateError } from '../../src/errors.js';
import { callLogContract } from './contract.js';

const run = promisify(execFile);
const root = await mkdtemp(join(tmpdir(), 'recgate-sqlite-'));
after(() => rm(root, { recursive: true, force: true }));

let counter = 0;

callLogContract('sqlite file', async () => {
  const dir = join(root, `db-${counter++}`);
  await mkdir(dir);
  const path = join(dir, 'recgate.db');
  return {
    log: new SqliteCallLog(path),
    makeSecond: async () => new SqliteCallLog(path),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

callLogContract('sqlite :memory:', async () => ({
  log: new SqliteCallLog(':memory:'),
  cleanup: async () => {},
}));

test('sqlite: the file is in WAL mode and every migration recorded once', async (t) => {
  const path = join(root, 'pragmas.db');
  const log = new SqliteCallLog(path);
  t.after(() => log.close());
  await log.migrate();
  await log.migrate();
  const db = new Database(path, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  const versions = db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all();
  assert.deepEqual(
    versions,
    SQLITE_MIGRATIONS.map((m) => m.version),
  );
  const indexes = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls'")
    .pluck()
    .all();
  assert.ok(indexes.includes('calls_business_order_idx'));
  assert.ok(indexes.includes('calls_recording_sid_idx'));
});

test('sqlite: a failing migration rolls back entirely and surfaces RECGATE_DATABASE_ERROR', async (t) => {
  const path = join(root, 'broken-migration.db');
  const broken = [
    ...SQLITE_MIGRATIONS,
    { version: SQLITE_MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE extra (x); SELEC oops' },
  ];
  const log = new SqliteCallLog(path, { migrations: broken });
  t.after(() => log.close());
  await assert.rejects(log.migrate(), (err: unknown) => {
    assert.ok(isRecgateError(err));
    assert.equal(err.code, 'RECGATE_DATABASE_ERROR');
    assert.doesNotMatch(err.message, /SELEC|syntax/, 'SQL stays out of the message');
    return true;
  });
  const db = new Database(path, { readonly: true });
  t.after(() => db.close());
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all();
  assert.ok(!tables.includes('calls'), 'the earlier migrations in the same run were rolled back too');
  assert.ok(!tables.includes('extra'));
});

test('sqlite: options are validated', () => {
  assert.throws(() => new SqliteCallLog(''), /path/);
  assert.throws(() => new SqliteCallLog(':memory:', { busyTimeoutMs: -1 }), /busyTimeoutMs/);
  assert.throws(
    () => new SqliteCallLog(join(root, 'missing-dir', 'x.db')),
    (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_DATABASE_ERROR',
  );
});

test('sqlite: worker processes migrating and writing one new file at once', async () => {
  const path = join(root, 'multi-process.db');
  const child = fileURLToPath(new URL('./fixtures/sqlite-worker.ts', import.meta.url));
  const workers = 4;
  const perWorker = 25;
  const outputs = await Promise.all(
    Array.from({ length: workers }, (_, i) =>
      run(process.execPath, ['--import', 'tsx', child, path, `biz-${i}`, String(perWorker)], {
        timeout: 60_000,
      }),
    ),
  );
  for (const { stdout } of outputs) assert.match(stdout, /^ok\n?$/);

  const log = new SqliteCallLog(path);
  try {
    for (let i = 0; i < workers; i++) {
      const page = await log.list(`biz-${i}`, { limit: 200 });
      assert.equal(page.calls.length, perWorker);
    }
  } finally {
    await log.close();
  }
  const db = new Database(path, { readonly: true });
  try {
    const versions = db.prepare('SELECT version FROM schema_migrations').pluck().all();
    assert.deepEqual(
      versions,
      SQLITE_MIGRATIONS.map((m) => m.version),
    );
  } finally {
    db.close();
  }
});
