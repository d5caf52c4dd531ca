import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteAccountStore } from '../../src/accounts/sqlite.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { accountStoreContract } from './contract.js';

accountStoreContract('sqlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'recgate-accounts-'));
  const path = join(dir, 'recgate.db');
  const log = new SqliteCallLog(path);
  await log.migrate();
  await log.close();
  return {
    store: new SqliteAccountStore(path),
    second: new SqliteAccountStore(path),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
