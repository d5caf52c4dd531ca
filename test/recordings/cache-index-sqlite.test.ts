import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { SqliteCacheIndex } from '../../src/recordings/cache-index/sqlite.js';
import { cacheIndexContract } from './cache-index-contract.js';

cacheIndexContract('sqlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'recgate-index-'));
  const path = join(dir, 'recgate.db');
  const log = new SqliteCallLog(path);
  await log.migrate();
  await log.close();
  return {
    index: new SqliteCacheIndex(path),
    second: new SqliteCacheIndex(path),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
