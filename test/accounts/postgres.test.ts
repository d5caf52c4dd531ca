import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import pg from 'pg';
import { openAccountStore } from '../../src/accounts/open.js';
import { PostgresAccountStore } from '../../src/accounts/postgres.js';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { isRecgateError } from '../../src/errors.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { accountStoreContract } from './contract.js';

const found = await findPostgres();

if ('reason' in found) {
  test('PostgreSQL account store', (t) => postgresUnavailable(t, found.reason));
} else {
  const url = found.url;
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  after(() => admin.end());
  const run = `recgate_accounts_${process.pid}_${randomBytes(4).toString('hex')}`;
  let counter = 0;
  accountStoreContract('postgres', async () => {
    const schema = `${run}_${counter++}`;
    const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 1 });
    await log.migrate();
    await log.close();
    return {
      store: new PostgresAccountStore({ connectionString: url, schema }),
      second: new PostgresAccountStore({ connectionString: url, schema }),
      cleanup: async () => {
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      },
    };
  });

  test('opened for a server, the store has its connection open before the first request', async (t) => {
    const schema = `${run}_${counter++}`;
    t.after(() => admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 1 });
    await log.migrate();
    await log.close();
    const name = `recgate_accounts_warm_${randomBytes(4).toString('hex')}`;
    const withName = new URL(url);
    withName.searchParams.set('application_name', name);
    const store = await openAccountStore({ kind: 'postgres', connectionString: withName.href, schema });
    t.after(() => store.close());
    const count = async () =>
      Number(
        (
          await admin.query<{ n: string }>(
            'SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1',
            [name],
          )
        ).rows[0]!.n,
      );
    assert.equal(await count(), 1);
    assert.equal(await store.get('acme'), undefined);
    assert.equal(await count(), 1);
  });

  test('a server that cannot reach the database fails to open the store with RECGATE_DATABASE_ERROR', async () => {
    await assert.rejects(
      openAccountStore({ kind: 'postgres', connectionString: 'postgres://recgate@127.0.0.1:1/none' }),
      (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_DATABASE_ERROR',
    );
  });
}
