import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { PostgresPrefetchQueue } from '../../src/prefetch/postgres.js';
import { SqlitePrefetchQueue } from '../../src/prefetch/sqlite.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { prefetchQueueContract } from './contract.js';

const root = await mkdtemp(join(tmpdir(), 'recgate-prefetch-'));
after(() => rm(root, { recursive: true, force: true }));
let counter = 0;

prefetchQueueContract('sqlite', async () => {
  const dir = join(root, `db-${counter++}`);
  await mkdir(dir);
  const path = join(dir, 'recgate.db');
  const log = new SqliteCallLog(path);
  await log.migrate();
  await log.close();
  return {
    queues: [new SqlitePrefetchQueue(path), new SqlitePrefetchQueue(path)],
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

const found = await findPostgres();
if ('reason' in found) {
  test('PostgreSQL prefetch queue', (t) => postgresUnavailable(t, found.reason));
} else {
  const admin = new pg.Pool({ connectionString: found.url, max: 1 });
  after(() => admin.end());
  const run = `recgate_prefetch_${process.pid}_${randomBytes(4).toString('hex')}`;
  prefetchQueueContract('postgres', async () => {
    const schema = `${run}_${counter++}`;
    const log = new PostgresCallLog({ connectionString: found.url, schema });
    await log.migrate();
    await log.close();
    const open = () => new PostgresPrefetchQueue({ connectionString: found.url, schema });
    return {
      queues: [open(), open()],
      cleanup: async () => {
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      },
    };
  });

  test('PostgreSQL: a claim skips a job another session holds locked, rather than waiting for it', async (t) => {
    const schema = `${run}_${counter++}`;
    const log = new PostgresCallLog({ connectionString: found.url, schema });
    await log.migrate();
    await log.close();
    const queue = new PostgresPrefetchQueue({ connectionString: found.url, schema });
    // Another worker's claim, caught between its UPDATE and its COMMIT: the row is locked, still queued.
    const holder = new pg.Client({ connectionString: found.url, options: `-c search_path=${schema}` });
    const watcher = new pg.Client({ connectionString: found.url });
    t.after(async () => {
      await holder.end().catch(() => undefined);
      await watcher.end();
      await queue.close();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    });
    await holder.connect();
    await watcher.connect();
    const sid = <T extends string>(prefix: string) => `${prefix}${randomBytes(16).toString('hex')}` as T;
    const [first, second] = [0, 1].map(() => ({
      recordingSid: sid<RecordingSid>('RE'),
      callSid: sid<CallSid>('CA'),
      businessId: 'biz-a',
    }));
    await queue.enqueue(first!);
    await queue.enqueue(second!);
    // The first due before the second: a claim that waited for its row would return it, not the second.
    await holder.query(
      `UPDATE prefetch_jobs SET run_after = run_after - interval '1 minute' WHERE recording_sid = $1`,
      [first!.recordingSid],
    );
    await holder.query('BEGIN');
    const held = await holder.query(
      `UPDATE prefetch_jobs SET state = 'running', attempts = attempts + 1 WHERE recording_sid = $1 RETURNING *`,
      [first!.recordingSid],
    );
    assert.equal(held.rowCount, 1);
    const holderPid = ((await holder.query('SELECT pg_backend_pid() AS pid')).rows[0] as { pid: number }).pid;

    // The claim either returns (SKIP LOCKED) or blocks on the holder's row lock, which PostgreSQL shows as a
    // session whose blocking pids include the holder: whichever comes first decides, no clock involved.
    const claim = queue.claim(1, 60_000).then((jobs) => ({ kind: 'claimed' as const, jobs }));
    let watching = true;
    const blocked = (async () => {
      while (watching) {
        const { rows } = await watcher.query(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
          [holderPid],
        );
        if ((rows[0] as { n: number }).n > 0) return { kind: 'blocked' as const };
        await sleep(5);
      }
      return { kind: 'stopped' as const };
    })();
    const outcome = await Promise.race([claim, blocked]);
    watching = false;
    await blocked;
    // Only now does the holder's transaction end: the claim above ran while it was open.
    await holder.query('ROLLBACK');
    assert.equal(outcome.kind, 'claimed', 'the claim waited on the locked row instead of skipping it');
    assert.deepEqual(
      outcome.jobs.map((j) => j.recordingSid),
      [second!.recordingSid],
      'the claim took the job nobody held',
    );
  });
}
