/** Opens the prefetch queue in the call log's database (which `openCallLog` has migrated by then). */
import { parseDatabaseUrl } from '../config/database-url.js';
import type { PrefetchQueue } from './queue.js';

export { Prefetcher, type PrefetcherOptions, type PrefetchOutcome } from './prefetcher.js';
export type { PrefetchDepth, PrefetchJob, PrefetchJobInput, PrefetchQueue } from './queue.js';

export async function openPrefetchQueue(
  databaseUrl: string | undefined,
  dataDir: string,
): Promise<PrefetchQueue> {
  const target = parseDatabaseUrl(databaseUrl, dataDir);
  if (target.kind === 'postgres') {
    const { PostgresPrefetchQueue } = await import('./postgres.js');
    return new PostgresPrefetchQueue({ connectionString: target.connectionString, schema: target.schema });
  }
  const { SqlitePrefetchQueue } = await import('./sqlite.js');
  return new SqlitePrefetchQueue(target.path);
}
