import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { isRecgateError } from '../../src/errors.js';
import {
  advisoryKey,
  PostgresLocker,
  type PostgresLockerOptions,
} from '../../src/recordings/lock/postgres.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { Child, hex32 } from './helpers.js';
import { abortedWithin, assertLockLost, lockContractTests } from './lock-contract.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;

if (url === undefined) {
  it('PostgreSQL lock backend', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
} else {
  const admin = new pg.Pool({ connectionString: url, max: 3 });
  after(() => admin.end());
  const run = `recgate_lock_${process.pid}_${hex32().slice(0, 8)}`;
  let schemas = 0;
  type T = { after(fn: () => void | Promise<void>): void };

  /** A schema of its own for the test's fencing table, dropped after the test. */
  const freshSchema = async (t: T) => {
    const schema = `${run}_${schemas++}`;
    await admin.query(`CREATE SCHEMA ${schema}`);
    t.after(async () => {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    });
    return schema;
  };

  /** A locker on a fresh schema, closed after the test. */
  const newLocker = async (t: T, options: Partial<PostgresLockerOptions> = {}) => {
    const schema = options.schema ?? (await freshSchema(t));
    const locker = new PostgresLocker({ connectionString: url, schema, pollIntervalMs: 10, ...options });
    t.after(() => locker.close());
    return { locker, schema };
  };

  /** The backend pid of the session holding the advisory lock of `id`, if any. */
  const holderPid = async (id: string): Promise<number | undefined> => {
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'recgate-lock'
          AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
          AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1`,
      [advisoryKey(id)],
    );
    return rows[0]?.pid;
  };

  const terminateHolder = async (id: string): Promise<void> => {
    const pid = await holderPid(id);
    assert.ok(pid !== undefined, 'a session holds the advisory lock');
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  };

  const lockId = () => `CA${hex32()}`;

  lockContractTests('postgres (advisory locks)', {
    orderedTokens: true,
    async create(t) {
      const { locker, schema } = await newLocker(t, { heartbeatMs: 50 });
      return { locker, childConfig: { backend: 'postgres', url, schema }, breakHold: terminateHolder };
    },
  });

  it('postgres locker: holds a server-side advisory lock while held, none after', async (t) => {
    const { locker } = await newLocker(t);
    const id = lockId();
    const lock = locker.newLock(id);
    await lock.lock(AbortSignal.timeout(1000));
    assert.notEqual(await holderPid(id), undefined);
    await lock.unlock();
    assert.equal(await holderPid(id), undefined);
  });

  it('postgres locker: 100 locks held at once share one server session, and a terminated session loses them all', async (t) => {
    // Its own application_name (the URL's wins over the locker's) tells its sessions apart.
    const name = `recgate-lock-many-${hex32().slice(0, 8)}`;
    const manyUrl = new URL(url);
    manyUrl.searchParams.set('application_name', name);
    const { locker } = await newLocker(t, { connectionString: manyUrl.href });
    const ids = Array.from({ length: 100 }, lockId);
    const locks = ids.map((id) => locker.newLock(id));
    assert.deepEqual(await Promise.all(locks.map((lock) => lock.tryLock())), Array(100).fill(true));
    await Promise.all(locks.map((lock) => lock.verify()));
    const { rows } = await admin.query<{ sessions: number; locks: number }>(
      `SELECT count(DISTINCT a.pid)::int AS sessions, count(l.pid)::int AS locks
         FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
        WHERE a.application_name = $1`,
      [name],
    );
    assert.deepEqual(rows[0], { sessions: 1, locks: 100 });
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
      name,
    ]);
    for (const lock of locks) await abortedWithin(lock.lost, 10_000);
    const other = locker.newLock(ids[0]!);
    await other.lock(AbortSignal.timeout(10_000));
    assert.ok(BigInt(other.token!) > BigInt(locks[0]!.token!), 'a new session takes the lock again');
    for (const lock of locks) await lock.unlock();
    await other.verify();
    await other.unlock();
  });

  it('postgres locker: a holder in another process whose session is terminated is told, and keeps running', async (t) => {
    const { locker, schema } = await newLocker(t);
    const id = lockId();
    const child = new Child('lock-child.ts', { backend: 'postgres', url, schema, id });
    t.after(() => child.kill());
    const { token } = await child.next('locked');
    await terminateHolder(id);
    assert.equal((await child.next('lost')).code, 'RECGATE_LOCK_LOST');
    child.send({ cmd: 'ping' });
    await child.next('pong');
    const next = locker.newLock(id);
    await next.lock(AbortSignal.timeout(10_000));
    assert.ok(BigInt(next.token!) > BigInt(token as string), 'the next holder has a larger token');
    child.send({ cmd: 'verify' });
    assert.equal((await child.next('verify_failed')).code, 'RECGATE_LOCK_LOST');
    child.send({ cmd: 'exit' });
    assert.equal(await child.exited, 0);
    await next.unlock();
  });

  it('postgres locker: a terminated session aborts lost at once, without waiting for a heartbeat', async (t) => {
    const { locker } = await newLocker(t, { heartbeatMs: 600_000 });
    const id = lockId();
    const a = locker.newLock(id);
    await a.lock(AbortSignal.timeout(1000));
    const token = a.token!;
    await terminateHolder(id);
    await abortedWithin(a.lost, 10_000);
    assertLockLost(a.lost.reason);
    assert.equal((a.lost.reason as Error).cause instanceof Error, true, 'the cause is the connection error');
    const b = locker.newLock(id);
    await b.lock(AbortSignal.timeout(10_000));
    assert.ok(BigInt(b.token!) > BigInt(token));
    await assert.rejects(a.verify(), assertLockLost);
    await b.verify();
    await a.unlock();
    await b.unlock();
  });

  it('postgres locker: the heartbeat notices a later generation and drops the session', async (t) => {
    const { locker, schema } = await newLocker(t, { heartbeatMs: 20 });
    const id = lockId();
    const a = locker.newLock(id);
    await a.lock(AbortSignal.timeout(1000));
    // A later hold's fencing increment, as if another session held the lock after this one lost it unnoticed.
    await admin.query(`UPDATE ${schema}.recgate_lock_fence SET generation = generation + 1 WHERE key = $1`, [
      advisoryKey(id),
    ]);
    await abortedWithin(a.lost, 10_000);
    assertLockLost(a.lost.reason);
    assert.match(String((a.lost.reason as Error).cause), /later hold/);
    await assert.rejects(a.verify(), assertLockLost);
    const b = locker.newLock(id);
    await b.lock(AbortSignal.timeout(10_000));
    await a.unlock();
    await b.unlock();
  });

  it('postgres locker: a check that outlasts queryTimeoutMs loses the hold', async (t) => {
    const { locker, schema } = await newLocker(t, { heartbeatMs: 20, queryTimeoutMs: 200 });
    const id = lockId();
    const a = locker.newLock(id);
    await a.lock(AbortSignal.timeout(1000));
    // A server that does not answer: the heartbeat's read of the fencing table waits behind this lock.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    t.after(() => blocker.end());
    await blocker.query('BEGIN');
    await blocker.query(`LOCK TABLE ${schema}.recgate_lock_fence IN ACCESS EXCLUSIVE MODE`);
    await abortedWithin(a.lost, 10_000);
    await blocker.query('ROLLBACK');
    assertLockLost(a.lost.reason);
    assert.match(String((a.lost.reason as Error).cause), /timeout/i);
    await assert.rejects(a.verify(), assertLockLost);
    const b = locker.newLock(id);
    await b.lock(AbortSignal.timeout(10_000));
    await a.unlock();
    await b.unlock();
  });

  it('postgres locker: a waiter whose session is terminated rejects with RECGATE_STORAGE_ERROR', async (t) => {
    const { locker: holder, schema } = await newLocker(t);
    // The waiter's own application_name (the URL's wins over the locker's) tells its session apart.
    const name = `recgate-lock-waiter-${hex32().slice(0, 8)}`;
    const waiterUrl = new URL(url);
    waiterUrl.searchParams.set('application_name', name);
    const { locker: waiters } = await newLocker(t, { connectionString: waiterUrl.href, schema });
    const id = lockId();
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
    assert.equal(held.lost.aborted, false, 'the holder is unaffected');
    await held.unlock();
    const again = waiters.newLock(id);
    assert.equal(await again.tryLock(), true, "the waiters' pool recovers with a new session");
    await again.unlock();
  });

  it('postgres locker: lockers starting together create the fencing table once', async (t) => {
    const schema = await freshSchema(t);
    const lockers = await Promise.all(Array.from({ length: 6 }, () => newLocker(t, { schema })));
    const locks = lockers.map(({ locker }) => locker.newLock(lockId()));
    assert.deepEqual(await Promise.all(locks.map((lock) => lock.tryLock())), Array(6).fill(true));
    const { rows } = await admin.query('SELECT tablename FROM pg_tables WHERE schemaname = $1', [schema]);
    assert.deepEqual(
      rows.map((r) => r.tablename),
      ['recgate_lock_fence'],
    );
    for (const lock of locks) await lock.unlock();
  });

  it('postgres locker: warm() creates the fencing table before any lock is taken', async (t) => {
    const { locker, schema } = await newLocker(t);
    await locker.warm();
    await locker.warm();
    const { rows } = await admin.query('SELECT tablename FROM pg_tables WHERE schemaname = $1', [schema]);
    assert.deepEqual(
      rows.map((r) => r.tablename),
      ['recgate_lock_fence'],
    );
  });

  it('postgres locker: validates options and ids', () => {
    const bad = (options: Partial<PostgresLockerOptions>, field: RegExp) =>
      assert.throws(() => new PostgresLocker({ connectionString: url, ...options }), field);
    bad({ connectionString: 'mysql://x' }, /options\.connectionString/);
    bad({ schema: 'Robert"; DROP' }, /options\.schema/);
    bad({ heartbeatMs: 0 }, /options\.heartbeatMs/);
    bad({ heartbeatMs: 1.5 }, /options\.heartbeatMs/);
    bad({ queryTimeoutMs: 0 }, /options\.queryTimeoutMs/);
    assert.throws(() => new PostgresLocker({ connectionString: url }).newLock('../x'), /lock id/);
  });
}
