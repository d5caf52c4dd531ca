/**
 * The upgrade path the README's "Deploy" section promises: replicas of a new release starting at once on a
 * call log an older release migrated. Each opens it as `recgate serve` does (`openCallLog`, which
 * migrates), on its own connections: every new migration is applied exactly once, the data already there
 * stays, and every replica works afterwards.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { CallLog } from '../../src/call-log/call-log.js';
import { openCallLog } from '../../src/call-log/index.js';
import { POSTGRES_MIGRATIONS } from '../../src/call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/call-log/migrations/sqlite-migrations.js';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import type { CallSid } from '../../src/sid.js';
import { tempDir } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { newCallSid } from './contract.js';

const REPLICAS = 4;

/** The release before the latest: every migration but the last. */
const OLD_POSTGRES = POSTGRES_MIGRATIONS.slice(0, -1);
const OLD_SQLITE = SQLITE_MIGRATIONS.slice(0, -1);

async function closeAll(logs: readonly CallLog[]): Promise<void> {
  await Promise.all(logs.map((log) => log.close()));
}

/** What every replica must see after the upgrade: the old call, and each other's writes. */
async function assertReplicasCooperate(logs: readonly CallLog[], oldCallSid: CallSid): Promise<void> {
  for (const log of logs) {
    assert.equal((await log.get(oldCallSid as CallSid))?.businessId, 'old-business', 'the old data stays');
  }
  const written = await Promise.all(
    logs.map((log, i) => log.upsert({ businessId: 'new-business', callSid: newCallSid(), from: `+${i}` })),
  );
  for (const log of logs) {
    const page = await log.list('new-business', { limit: 50 });
    assert.deepEqual(page.calls.map((c) => c.callSid).sort(), written.map((c) => c.callSid).sort());
  }
}

const found = await findPostgres();

if ('reason' in found) {
  test('upgrade: PostgreSQL replicas migrating at once', (t) => postgresUnavailable(t, found.reason));
} else {
  const admin = new pg.Pool({ connectionString: found.url, max: 2 });
  const schema = `recgate_upgrade_${process.pid}_${randomBytes(4).toString('hex')}`;
  after(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  });

  test('upgrade: PostgreSQL replicas of a new release starting at once migrate once and keep the data', async () => {
    assert.ok(OLD_POSTGRES.length >= 1, 'there is an older release to upgrade from');
    const old = new PostgresCallLog({ connectionString: found.url, schema, migrations: OLD_POSTGRES });
    await old.migrate();
    await old.close();
    const oldCallSid = newCallSid();
    await admin.query(
      `INSERT INTO ${schema}.calls (call_sid, business_id, created_at, updated_at) VALUES ($1, 'old-business', now(), now())`,
      [oldCallSid],
    );

    const url = `${found.url}?schema=${schema}`;
    const logs = await Promise.all(Array.from({ length: REPLICAS }, () => openCallLog(url, '/nonexistent')));
    try {
      const { rows } = await admin.query<{ version: number }>(
        `SELECT version FROM ${schema}.schema_migrations ORDER BY version`,
      );
      assert.deepEqual(
        rows.map((r) => Number(r.version)),
        POSTGRES_MIGRATIONS.map((m) => m.version),
        'every migration recorded exactly once',
      );
      await assertReplicasCooperate(logs, oldCallSid);
    } finally {
      await closeAll(logs);
    }
  });
}

test('upgrade: SQLite opened by several processes of a new release at once migrates once and keeps the data', async (t) => {
  assert.ok(OLD_SQLITE.length >= 1, 'there is an older release to upgrade from');
  const dataDir = tempDir(t);
  const file = join(dataDir, 'recgate.db');
  const old = new SqliteCallLog(file, { migrations: OLD_SQLITE });
  await old.migrate();
  await old.close();
  const oldCallSid = newCallSid();
  const db = new Database(file);
  db.prepare(
    "INSERT INTO calls (call_sid, business_id, created_at, updated_at) VALUES (?, 'old-business', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')",
  ).run(oldCallSid);
  db.close();

  // Each SqliteCallLog has its own connection, as each worker process of `--workers N` does.
  const logs = await Promise.all(Array.from({ length: REPLICAS }, () => openCallLog(undefined, dataDir)));
  try {
    const check = new Database(file, { readonly: true });
    try {
      assert.deepEqual(
        check.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all(),
        SQLITE_MIGRATIONS.map((m) => m.version),
        'every migration recorded exactly once',
      );
    } finally {
      check.close();
    }
    await assertReplicasCooperate(logs, oldCallSid);
  } finally {
    await closeAll(logs);
  }
});
