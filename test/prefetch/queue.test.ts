import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { PostgresPrefetchQueue } from '../../src/prefetch/postgres.js';
import { SqlitePrefetchQueue } from '../../src/prefetch/sqlite.js';
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
}
