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
          'business_accounts',
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

    /**
     * Counts the call lookups the pool sends and, while `hold` is set, keeps each lookup's answer from its
     * caller until `hold` resolves (the query itself has run: what it read is what the server had then).
     */
    const watchLookups = (t: { after(fn: () => void): void }) => {
      const original = pg.Client.prototype.query;
      // pg's query has many overloads; the pool calls it as (text, values, callback).
      type Query = (this: pg.Client, ...args: unknown[]) => unknown;
      const call = original as unknown as Query;
      const seen = { lookups: 0, hold: undefined as Promise<void> | undefined };
      const watched: Query = function (...args) {
        const [text, values, callback] = args;
        if (typeof text !== 'string' || !text.startsWith('SELECT * FROM calls WHERE'))
          return call.apply(this, args);
        if (typeof callback !== 'function') return call.apply(this, args);
        seen.lookups++;
        const hold = seen.hold;
        if (hold === undefined) return call.apply(this, args);
        return call.call(this, text, values, (err: unknown, res: unknown) => {
          void hold.then(() => callback(err, res));
        });
      };
      pg.Client.prototype.query = watched as unknown as typeof original;
      t.after(() => {
        pg.Client.prototype.query = original;
      });
      return seen;
    };

    test('equal lookups at the same time share one query; other businesses and calls get their own', async (t) => {
      const schema = newSchema();
      t.after(() => dropSchema(schema));
      const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 4 });
      t.after(() => log.close());
      await log.migrate();
      const a = newCallSid();
      const b = newCallSid();
      await log.upsert({ callSid: a, businessId: 'acme' });
      await log.upsert({ callSid: b, businessId: 'acme' });
      const seen = watchLookups(t);
      const [same, other, foreign, byId] = await Promise.all([
        Promise.all(Array.from({ length: 50 }, () => log.getForBusiness('acme', a))),
        log.getForBusiness('acme', b),
        // Another business asking for acme's call at the same moment shares nothing with acme's lookups.
        log.getForBusiness('globex', a),
        log.get(a),
      ]);
      assert.equal(seen.lookups, 4);
      for (const call of same) assert.equal(call?.callSid, a);
      assert.equal(other?.callSid, b);
      assert.equal(foreign, undefined);
      assert.equal(byId?.businessId, 'acme');
      // Once answered, the next lookup asks again.
      assert.equal((await log.getForBusiness('acme', a))?.callSid, a);
      assert.equal(seen.lookups, 5);
    });

    test('a lookup begun after this call log wrote never shares the answer of one begun before', async (t) => {
      const schema = newSchema();
      t.after(() => dropSchema(schema));
      const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 4 });
      t.after(() => log.close());
      await log.migrate();
      const sid = newCallSid();
      await log.upsert({ callSid: sid, businessId: 'acme' });
      const seen = watchLookups(t);
      let release!: () => void;
      seen.hold = new Promise((resolve) => {
        release = resolve;
      });
      // Read before the purge, its answer held back until after it.
      const before = log.getForBusiness('acme', sid);
      const beforeById = log.get(sid);
      while (seen.lookups < 2) await sleep(5);
      assert.equal(await log.markPurged(sid, null), 1);
      seen.hold = undefined;
      const after = log.getForBusiness('acme', sid);
      const afterById = log.get(sid);
      release();
      assert.equal((await before)?.purgedAt, null);
      assert.equal((await beforeById)?.purgedAt, null);
      assert.notEqual((await after)?.purgedAt, null);
      assert.notEqual((await afterById)?.purgedAt, null);
      assert.equal(seen.lookups, 4);
    });

    test('a failed lookup fails every request that shared it, and the next one asks again', async (t) => {
      const schema = newSchema();
      t.after(() => dropSchema(schema));
      const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 2 });
      t.after(() => log.close());
      await log.migrate();
      const sid = newCallSid();
      await log.upsert({ callSid: sid, businessId: 'acme' });
      // The table goes away under the lookups: each fails as a database error.
      await admin.query(`ALTER TABLE ${schema}.calls RENAME TO calls_away`);
      const seen = watchLookups(t);
      const failed = await Promise.allSettled(
        Array.from({ length: 10 }, () => log.getForBusiness('acme', sid)),
      );
      assert.equal(seen.lookups, 1);
      for (const result of failed) {
        assert.equal(result.status, 'rejected');
        assert.ok(isRecgateError(result.reason) && result.reason.code === 'RECGATE_DATABASE_ERROR');
      }
      await admin.query(`ALTER TABLE ${schema}.calls_away RENAME TO calls`);
      assert.equal((await log.getForBusiness('acme', sid))?.callSid, sid);
      assert.equal(seen.lookups, 2);
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
