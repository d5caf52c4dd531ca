/**
 * Opens the cache index in the call log's database: the same SQLite file or PostgreSQL schema, which the
 * call log has migrated by then. An in-memory SQLite call log has no file another connection could share,
 * so it has no cache index (and the cache then has no bounded disk).
 */
import type { DatabaseTarget } from '../../config/database-url.js';
import type { CacheIndex } from './cache-index.js';

export type {
  CachedFile,
  CacheIndex,
  CacheTotals,
  OldestCursor,
  PlayCounts,
  TopFile,
} from './cache-index.js';

/** The index beside the call log `target` names, or `undefined` for an in-memory SQLite database. */
export async function openCacheIndex(target: DatabaseTarget): Promise<CacheIndex | undefined> {
  if (target.kind === 'postgres') {
    const { PostgresCacheIndex } = await import('./postgres.js');
    return new PostgresCacheIndex({
      connectionString: target.connectionString,
      ...(target.schema === undefined ? {} : { schema: target.schema }),
    });
  }
  if (target.path === ':memory:') return undefined;
  const { SqliteCacheIndex } = await import('./sqlite.js');
  return new SqliteCacheIndex(target.path);
}
