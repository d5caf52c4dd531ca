/** Opens the {@link AccountStore} beside the call log that a database target names. */
import type { DatabaseTarget } from '../config/database-url.js';
import type { AccountStore } from './store.js';

/**
 * The store in the call log's database (the same SQLite file or PostgreSQL schema, which the call log has
 * migrated by then), its PostgreSQL connection open; a memory store for an in-memory SQLite call log.
 */
export async function openAccountStore(target: DatabaseTarget): Promise<AccountStore> {
  if (target.kind === 'postgres') {
    const { PostgresAccountStore } = await import('./postgres.js');
    const store = new PostgresAccountStore({
      connectionString: target.connectionString,
      ...(target.schema === undefined ? {} : { schema: target.schema }),
    });
    try {
      await store.warm();
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    return store;
  }
  if (target.path === ':memory:') {
    const { MemoryAccountStore } = await import('./memory.js');
    return new MemoryAccountStore();
  }
  const { SqliteAccountStore } = await import('./sqlite.js');
  return new SqliteAccountStore(target.path);
}
