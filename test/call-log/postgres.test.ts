import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { POSTGRES_MIGRATIONS } from '../../src/call-log/migrations/postgres-migrations.js';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { isRecgateError } from '../../src/errors.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { callLogContract, newCallSid } from './contract.js';

const found = await findPostgres();

if ('reason' in found) {
  test('PostgreSQL call log', (t) => postgresUnavailable(t, found.reason));
} else {
  const url = found.url;
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  after(() => admin.end());
  const run = `recgate_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  let counter = 0;
  const newSchema = () => `${run}_${counter++}`;
  const dropSchema = async (schema: string) => {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  };

  callLogContract('postgres', async () => {
    const schema = newSchema();
    const open = () => new PostgresCallLog({ connectionString: url, schema, poolSize: 4 });
    return { log: open(), makeSecond: async () => open(), cleanup: () => dropSchema(schema) };
  });

  describe('PostgreSQL specifics', () => {
    test('migrate creates the schema, its tables and indexes, and records each version once', async (t) => {
      const schema = newSchema();
      const logs = [0, 1, 2].map(() => new PostgresCallLog({ connectionString: url, schema, poolSize: 2 }));
      t.after(async () => {
        for (const log of logs) await log.close();
        await dropSchema(schema);
      });
      await Promise.all(logs.map((log) => log.migrate()));
      const versions = await admin.query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
      assert.deepEqual(
        versions.rows.map((r) => r.version),
        POSTGRES_MIGRATIONS.map((m) => m.version),
      );
      const indexes = await admin.query('SELECT indexname FROM pg_indexes WHERE schemaname = $1', [schema]);
      const names = indexes.rows.map((r) => r.indexname);
      assert.ok(names.includes('calls_business_order_idx'));
      assert.ok(names.includes('calls_recording_sid_idx'));
      assert.ok(names.includes('plays_call_idx'));
      assert.ok(names.includes('cached_files_hits_idx'));
      const tables = await admin.query('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1', [
        schema,
      ]);
      assert.deepEqual(
        tables.rows.map((r) => r.tablename),
        [
          'cache_plays',
          'cache_totals',
          'cached_files',
          'calls',
          'plays',
          'prefetch_jobs',
          'purged_recordings',
          'schema_migrations',
        ],
      );
    });

    test('schemas are isolated from each other', async (t) => {
      const [s1, s2] = [newSchema(), newSchema()];
      const a = new PostgresCallLog({ connectionString: url, schema: s1 });
      const b = new PostgresCallLog({ connectionString: url, schema: s2 });
      t.after(async () => {
        await a.close();
        await b.close();
        await dropSchema(s1);
        await dropSchema(s2);
      });
      await Promise.all([a.migrate(), b.migrate()]);
      const callSid = newCallSid();
      await a.upsert({ businessId: 'biz', callSid });
      assert.equal(await b.get(callSid), undefined);
    });

    test('a failing migration rolls back entirely and surfaces RECGATE_DATABASE_ERROR', async (t) => {
      const schema = newSchema();
      const broken = [
        ...POSTGRES_MIGRATIONS,
        {
          version: POSTGRES_MIGRATIONS.length + 1,
          name: 'broken',
          sql: 'CREATE TABLE extra (x int); SELEC oops',
        },
      ];
      const log = new PostgresCallLog({ connectionString: url, schema, migrations: broken });
      t.after(async () => {
        await log.close();
        await dropSchema(schema);
      });
      await assert.rejects(log.migrate(), (err: unknown) => {
        assert.ok(isRecgateError(err));
        assert.equal(err.code, 'RECGATE_DATABASE_ERROR');
        assert.doesNotMatch(err.message, /SELEC|syntax/);
        return true;
      });
      const tables = await admin.query('SELECT tablename FROM pg_tables WHERE schemaname = $1', [schema]);
      assert.equal(tables.rowCount, 0, 'nothing from the failed run was kept');
    });

    test('a migration whose session is terminated fails with RECGATE_DATABASE_ERROR, and the process lives', async (t) => {
      const schema = newSchema();
      const marker = `recgate_terminated_${randomBytes(4).toString('hex')}`;
      const slow = [
        ...POSTGRES_MIGRATIONS,
        { version: POSTGRES_MIGRATIONS.length + 1, name: 'slow', sql: `SELECT pg_sleep(60) AS ${marker}` },
      ];
      const log = new PostgresCallLog({ connectionString: url, schema, migrations: slow });
      t.after(async () => {
        await log.close();
        await dropSchema(schema);
      });
      // Checked from the start: the rejection can come before the terminating query returns.
      const migrating = assert.rejects(
        log.migrate(),
        (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_DATABASE_ERROR',
      );
      let pid: number | undefined;
      while (pid === undefined) {
        const { rows } = await admin.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE query LIKE '%' || $1::text || '%' AND pid <> pg_backend_pid()`,
          [`AS ${marker}`],
        );
        pid = rows[0]?.pid;
        if (pid === undefined) await sleep(20);
      }
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await migrating;
      // The connection's 'end' comes a tick after the query fails; it must find a listener too.
      await sleep(50);
      assert.equal(await log.ping(), true, 'the pool recovers with a new connection');
    });

    test('an unreachable server: ping is false and calls fail with RECGATE_DATABASE_ERROR', async (t) => {
      // Port 1 on localhost refuses connections at once.
      const log = new PostgresCallLog({
        connectionString: 'postgres://nobody@127.0.0.1:1/none',
        schema: 'x',
      });
      t.after(() => log.close());
      assert.equal(await log.ping(), false);
      await assert.rejects(
        log.get(newCallSid()),
        (err: unknown) =>
          isRecgateError(err) && err.code === 'RECGATE_DATABASE_ERROR' && err.cause !== undefined,
      );
      await assert.rejects(
        log.migrate(),
        (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_DATABASE_ERROR',
      );
    });

    test('options are validated, naming the field', () => {
      const bad = (options: Record<string, unknown>, field: RegExp) =>
        assert.throws(
          () => new PostgresCallLog({ connectionString: url, ...options } as never),
          (err: unknown) =>
            isRecgateError(err) && err.code === 'RECGATE_INVALID_REQUEST' && field.test(err.message),
        );
      bad({ connectionString: 'mysql://x' }, /connectionString/);
      bad({ connectionString: undefined }, /connectionString/);
      bad({ schema: 'Robert"; DROP' }, /schema/);
      bad({ schema: '' }, /schema/);
      bad({ poolSize: 0 }, /poolSize/);
      bad({ poolSize: 2.5 }, /poolSize/);
      bad({ connectionTimeoutMs: 0 }, /connectionTimeoutMs/);
      bad({ minConnections: -1 }, /minConnections/);
      bad({ poolSize: 2, minConnections: 3 }, /minConnections/);
    });

    test('migrate opens minConnections, so the first requests after a start find them open', async (t) => {
      const schema = newSchema();
      t.after(() => dropSchema(schema));
      const name = `recgate_warm_${randomBytes(4).toString('hex')}`;
      const withName = new URL(url);
      withName.searchParams.set('application_name', name);
      const log = new PostgresCallLog({
        connectionString: withName.href,
        schema,
        poolSize: 4,
        minConnections: 3,
      });
      t.after(() => log.close());
      await log.migrate();
      const { rows } = await admin.query<{ n: string }>(
        'SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1',
        [name],
      );
      assert.equal(Number(rows[0]!.n), 3);
    });
  });
}
