/**
 * Opens the prefetch queue in the call log's database (which `openCallLog` has migrated by then). An
 * in-memory SQLite call log has no file another connection could share, so it has no queue: prefetch is
 * off, and a `completed` webhook still records the recording.
 */
import type { DatabaseTarget } from '../config/database-url.js';
import type { PrefetchQueue } from './queue.js';

export { Prefetcher, type PrefetcherOptions, type PrefetchOutcome } from './prefetcher.js';
export type { PrefetchDepth, PrefetchJob, PrefetchJobInput, PrefetchQueue } from './queue.js';

/** The queue beside the call log `target` names, or `undefined` for an in-memory SQLite database. */
export async function openPrefetchQueue(target: DatabaseTarget): Promise<PrefetchQueue | undefined> {
  if (target.kind === 'postgres') {
    const { PostgresPrefetchQueue } = await import('./postgres.js');
    return new PostgresPrefetchQueue({ connectionString: target.connectionString, schema: target.schema });
  }
  if (target.path === ':memory:') return undefined;
  const { SqlitePrefetchQueue } = await import('./sqlite.js');
  return new SqlitePrefetchQueue(target.path);
}
