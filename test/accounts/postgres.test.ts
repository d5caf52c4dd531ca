import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import pg from 'pg';
import { PostgresAccountStore } from '../../src/accounts/postgres.js';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
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
}
