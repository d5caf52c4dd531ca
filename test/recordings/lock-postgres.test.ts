import assert from 'node:assert/strict';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { isRecgateError } from '../../src/errors.js';
import { advisoryKey, PostgresLocker } from '../../src/recordings/lock/postgres.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { Child, hex32 } from './helpers.js';
import { lockContractTests } from './lock-contract.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;

if (url === undefined) {
  it('PostgreSQL lock backend', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
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

  it('postgres locker: a holder whose session is terminated keeps running', async (t) => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(() => admin.end());
    const id = `CA${hex32()}`;
    const child = new Child('lock-child.ts', { backend: 'postgres', url, id });
    t.after(() => child.kill());
    await child.next('locked');
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'recgate-lock'
          AND l.classid = (($1::bigint >> 32) & 4294967295)::oid AND l.objid = ($1::bigint & 4294967295)::oid`,
      [advisoryKey(id)],
    );
    assert.equal(rows.length, 1, 'the child holds the advisory lock');
    await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
    child.send({ cmd: 'ping' });
    await child.next('pong');
    child.send({ cmd: 'exit' });
    assert.equal(await child.exited, 0);
  });

  it('postgres locker: a waiter whose session is terminated rejects with RECGATE_STORAGE_ERROR', async (t) => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(() => admin.end());
    const holder = new PostgresLocker({ connectionString: url, pollIntervalMs: 10 });
    t.after(() => holder.close());
    // The waiter's own application_name (the URL's wins over the locker's) tells its session apart.
    const name = `recgate-lock-waiter-${hex32().slice(0, 8)}`;
    const waiterUrl = new URL(url);
    waiterUrl.searchParams.set('application_name', name);
    const waiters = new PostgresLocker({ connectionString: waiterUrl.href, pollIntervalMs: 10 });
    t.after(() => waiters.close());
    const id = `CA${hex32()}`;
    const held = holder.newLock(id);
    assert.equal(await held.tryLock(), true);
    // Checked from the start: the rejection can come before the terminating query returns.
    const waiting = assert.rejects(
      waiters.newLock(id).lock(AbortSignal.timeout(20_000)),
      (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_STORAGE_ERROR',
    );
    let pid: number | undefined;
    while (pid === undefined) {
      const { rows } = await admin.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_activity WHERE application_name = $1',
        [name],
      );
      pid = rows[0]?.pid;
      if (pid === undefined) await sleep(10);
    }
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await waiting;
    await held.unlock();
    const again = waiters.newLock(id);
    assert.equal(await again.tryLock(), true, "the waiters' pool recovers with a new session");
    await again.unlock();
  });

  it('postgres locker: validates options and ids', () => {
    assert.throws(() => new PostgresLocker({ connectionString: 'mysql://x' }), /options\.connectionString/);
    assert.throws(() => new PostgresLocker({ connectionString: url, maxConnections: 0 }), /maxConnections/);
    assert.throws(() => new PostgresLocker({ connectionString: url }).newLock('../x'), /lock id/);
  });
}
