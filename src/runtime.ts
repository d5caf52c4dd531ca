/**
 * The recording cache's runtime pieces for one configuration: the download lock backend, the store on the
 * recordings directory, the cache index and its evictor (bounded disk), and the cache itself. `startGateway`
 * builds them here, and so do the admin commands (`recgate purge`, `recgate prefetch`), so a command works
 * on the very same files, locks and index as the gateways running beside it.
 *
 * The call log must be open (and migrated) first: the PostgreSQL lock's fencing table and the cache index
 * live in its schema.
 */
import type { Logger } from 'pino';
import { type DatabaseTarget, parseDatabaseUrl } from './call-log/index.js';
import { type Config, recordingsDir } from './config/config.js';
import { type CacheIndex, openCacheIndex } from './recordings/cache-index/open.js';
import { Evictor, type EvictorOptions } from './recordings/eviction.js';
import {
  type CacheEventHandler,
  createRecordingCache,
  FsLocker,
  FsRecordingStore,
  type LocalRecordingCache,
  type UpstreamGateOptions,
} from './recordings/index.js';
import type { Locker } from './recordings/lock/lock.js';
import type { Upstream } from './upstream/upstream.js';

export interface CacheRuntimeOptions {
  /** Where downloads come from. */
  upstream: Pick<Upstream, 'fetchMedia'>;
  logger: Logger;
  /** Also told each cache event (metrics); the evictor always is. */
  onEvent?: CacheEventHandler;
  /** Breaker, cold-download limit and admission of this process's downloads. @default none */
  gate?: UpstreamGateOptions;
  /** The evictor's observers (metrics). */
  evictor?: Pick<EvictorOptions, 'onEvicted' | 'onTotals'>;
}

export interface CacheRuntime {
  database: DatabaseTarget;
  cache: LocalRecordingCache;
  /** The cache index; none for an in-memory SQLite call log. */
  index: CacheIndex | undefined;
  /** Keeps the index in step and enforces the `--cache-*` limits; with the index. */
  evictor: Evictor | undefined;
  /** Closes the evictor, the cache, the index and the lock backend, in that order. */
  close(): Promise<void>;
}

/** The lock backend of `config`: `--lock-backend`, or PostgreSQL's when the call log is on it. */
export function lockBackendOf(
  config: Pick<Config, 'lockBackend' | 'databaseUrl' | 'dataDir'>,
): 'fs' | 'postgres' {
  return (
    config.lockBackend ??
    (parseDatabaseUrl(config.databaseUrl, config.dataDir).kind === 'postgres' ? 'postgres' : 'fs')
  );
}

export async function openCacheRuntime(config: Config, options: CacheRuntimeOptions): Promise<CacheRuntime> {
  const { logger } = options;
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  // Several hosts over shared storage need a lock they all see; the call log's PostgreSQL is one. Its
  // fencing table goes in the call log's schema, which openCallLog has created by now.
  const pgLocker =
    lockBackendOf(config) === 'postgres' && database.kind === 'postgres'
      ? new (await import('./recordings/lock/postgres.js')).PostgresLocker({
          connectionString: database.connectionString,
          ...(database.schema === undefined ? {} : { schema: database.schema }),
        })
      : undefined;
  const dir = recordingsDir(config);
  const store = new FsRecordingStore({ dir });
  const locker: Locker = pgLocker ?? new FsLocker({ dir, pollIntervalMs: 15 });
  let bounded: { evictor: Evictor; index: CacheIndex } | undefined;
  try {
    // Before the first request: otherwise the first stampede after a start waits for the fencing table
    // and the lock's connections, in every process at once.
    await pgLocker?.warm();
    bounded = await startEvictor(config, database, { store, locker, logger, ...options.evictor });
  } catch (err) {
    await pgLocker?.close();
    throw err;
  }
  const evictor = bounded?.evictor;
  const cache = createRecordingCache({
    dir,
    upstream: options.upstream,
    store,
    locker,
    logger,
    lockTimeoutMs: config.lockTimeoutMs,
    onEvent: (event) => {
      options.onEvent?.(event);
      evictor?.observe(event);
    },
    ...(options.gate === undefined ? {} : { gate: options.gate }),
  });
  return {
    database,
    cache,
    index: bounded?.index,
    evictor,
    close: async () => {
      await evictor?.close();
      await cache.close();
      await bounded?.index.close();
      await pgLocker?.close();
    },
  };
}

/**
 * Bounded disk (see `recordings/eviction.ts`): the evictor keeps the cache index in the call log's database
 * in step, and enforces the `--cache-*` limits. None for an in-memory SQLite call log, which has no index.
 */
async function startEvictor(
  config: Config,
  database: DatabaseTarget,
  deps: Pick<EvictorOptions, 'store' | 'locker' | 'logger' | 'onEvicted' | 'onTotals'>,
): Promise<{ evictor: Evictor; index: CacheIndex } | undefined> {
  const index = await openCacheIndex(database);
  if (index === undefined) return undefined;
  const evictor = new Evictor({
    index,
    ...deps,
    limits: {
      maxBytes: config.cacheMaxBytes,
      minFree: config.cacheMinFree,
      maxAgeMs: config.cacheMaxAgeMs,
    },
  });
  try {
    await evictor.start();
  } catch (err) {
    await evictor.close().catch(() => undefined);
    await index.close();
    throw err;
  }
  return { evictor, index };
}
