import assert from 'node:assert/strict';
import { it } from 'node:test';
import pg from 'pg';
import { advisoryKey, PostgresLocker } from '../../src/recordings/lock/postgres.js';
import { findPostgres } from '../helpers/postgres.js';
import { lockContractTests } from './lock-contract.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;

if (url === undefined) {
  it('PostgreSQL lock backend', (t) => {
    t.skip(
      `PostgreSQL is not reachable (${'reason' in found ? found.reason : ''}); set RECGATE_TEST_POSTGRES_URL`,
    );
  });
} else {
  lockContractTests('postgres (advisory locks)', {
    async create(t) {
      const locker = new PostgresLocker({ connectionString: url, pollIntervalMs: 10 });
      t.after(() => locker.close());
      return { locker, childConfig: { backend: 'postgres', url } };
    },
  });

  it('postgres locker: holds a server-side advisory lock while held, none after', async (t) => {
    const locker = new PostgresLocker({ connectionString: url, pollIntervalMs: 10 });
    t.after(() => locker.close());
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(() => admin.end());
    const id = `CA${'e'.repeat(32)}`;
    const key = BigInt.asUintN(64, BigInt(advisoryKey(id)));
    const held = async () => {
      const { rows } = await admin.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND ((classid::bigint << 32) | objid::bigint) = $1::numeric`,
        [key.toString()],
      );
      return Number(rows[0]!.n);
    };
    const lock = locker.newLock(id);
    await lock.lock(AbortSignal.timeout(1000));
    assert.equal(await held(), 1);
    await lock.unlock();
    assert.equal(await held(), 0);
  });

  it('postgres locker: validates options and ids', () => {
    assert.throws(() => new PostgresLocker({ connectionString: 'mysql://x' }), /options\.connectionString/);
    assert.throws(() => new PostgresLocker({ connectionString: url, maxConnections: 0 }), /maxConnections/);
    assert.throws(() => new PostgresLocker({ connectionString: url }).newLock('../x'), /lock id/);
  });
}
