/**
 * Composition root: builds one process's gateway from its configuration. `recgate serve` calls it once per
 * worker; tests call it directly with port 0.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AccountDirectory } from './accounts/directory.js';
import { JwtAuth } from './auth/jwt.js';
import { PlaybackSigner } from './auth/playback-url.js';
import type { CallLog } from './call-log/call-log.js';
import { type DatabaseTarget, openCallLog, parseDatabaseUrl } from './call-log/index.js';
import { assertGatewaySettings, type Config, upstreamQueueTimeoutMs } from './config/config.js';
import { buildApp } from './http/app.js';
import type { AppDeps } from './http/deps.js';
import type { MetricsSource } from './http/routes/health.js';
import { uiRoutes } from './http/ui.js';
import { onSyncOff } from './io/sync-guard.js';
import { type DrainOptions, type DrainReport, DrainState, drainGateway } from './lifecycle/drain.js';
import { RateLimiter, workerShare } from './limits/rate-limiter.js';
import { AuditTrail } from './observability/audit.js';
import { createLogger } from './observability/logger.js';
import {
  admissionMetrics,
  breakerMetrics,
  cacheEventMetrics,
  getMetrics,
  type Metrics,
} from './observability/metrics.js';
import { openPrefetchQueue, Prefetcher, type PrefetchQueue } from './prefetch/index.js';
import type { Admission } from './recordings/admission/admission.js';
import { LocalAdmission } from './recordings/admission/local.js';
import { openRecordingKeys } from './recordings/decrypt/index.js';
import type { LocalRecordingCache } from './recordings/index.js';
import { RecordingResolver } from './resolution/resolver.js';
import { RecordingState } from './resolution/state.js';
import { openCacheRuntime, openUpstreamRuntime } from './runtime.js';
import { UpstreamBreaker } from './upstream/breaker.js';
import type { RequestEvent, RetryEvent, TwilioClientOptions } from './upstream/twilio-client.js';
import type { Upstream } from './upstream/upstream.js';

export interface Gateway {
  app: FastifyInstance;
  /** `http://host:port` actually bound. */
  url: string;
  callLog: CallLog;
  cache: LocalRecordingCache;
  upstream: Upstream;
  logger: Logger;
  /**
   * Reads `--recording-keys-dir` again (`recgate serve` calls it on SIGHUP). Throws an Error naming a bad
   * file; the keys loaded before then stay in use. Does nothing without the option.
   */
  reloadRecordingKeys(): void;
  /** Closes at once: responses in flight are waited for without limit, downloads cancelled. */
  close(): Promise<void>;
  /** Stops the way SIGTERM does: /readyz 503, drain delay, listener closed, shutdown timeout, close. */
  drain(options: DrainOptions): Promise<DrainReport>;
}

export interface GatewayOptions {
  logger?: Logger;
  /** Where /metrics reads from; under --workers, the primary's aggregate of every worker. */
  metrics?: MetricsSource;
  /**
   * Timeouts and retry policy of the Twilio client, each with the client's own default (see
   * {@link TwilioClientOptions}). Not a flag: fault tests shorten them so a stalled or failing upstream
   * is seen in milliseconds. @default the client's defaults
   */
  upstream?: Pick<
    TwilioClientOptions,
    'connectTimeoutMs' | 'headersTimeoutMs' | 'bodyIdleTimeoutMs' | 'retry'
  >;
}

/**
 * One process's runtime pieces, without a listener: what the HTTP routes need ({@link AppDeps}), the
 * background jobs (sweep of leftovers, prefetcher), and one `close()` for all of them. `startGateway` serves
 * them with its own listener; src/embed mounts them in another app.
 */
export interface GatewayRuntime {
  deps: AppDeps & { drain: DrainState };
  callLog: CallLog;
  cache: LocalRecordingCache;
  upstream: Upstream;
  logger: Logger;
  /** Stops taking prefetch jobs (they go back to the queue for another process); close() does too. */
  stopPrefetch(): Promise<void>;
  /** See {@link Gateway.reloadRecordingKeys}. */
  reloadRecordingKeys(): void;
  /** Stops the background jobs and closes the cache, the locks, the queues and the call log, once. */
  close(): Promise<void>;
}

export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const runtime = await openGatewayRuntime(config, options);
  const { deps, callLog, cache, upstream, logger } = runtime;
  let app: FastifyInstance;
  let address: string;
  try {
    app = await buildApp(deps, { metrics: options.metrics, plugins: [uiRoutes] });
    address = await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    await runtime.close();
    throw err;
  }
  const drainState = deps.drain;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await app.close();
    await runtime.close();
  };
  return {
    app,
    url: address.replace('[::1]', 'localhost'),
    callLog,
    cache,
    upstream,
    logger,
    reloadRecordingKeys: runtime.reloadRecordingKeys,
    close,
    drain: (drainOptions) => {
      // No new prefetch once the process starts to stop: its jobs go back to the queue for another worker.
      void runtime.stopPrefetch();
      return drainGateway({ app, state: drainState, logger, release: close }, drainOptions);
    },
  };
}

/** Opens everything `startGateway` serves (see {@link GatewayRuntime}); validates what it needs first. */
export async function openGatewayRuntime(
  config: Config,
  options: Pick<GatewayOptions, 'logger' | 'upstream'> = {},
): Promise<GatewayRuntime> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  assertGatewaySettings(config);
  // Before anything is opened: a bad key file is a start-up error naming the file.
  const recordingKeys = openRecordingKeys(config.recordingKeysDir, logger);
  const metrics = getMetrics();
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  const breaker = new UpstreamBreaker({ onChange: breakerMetrics(metrics, 'main') });
  // The main client, which account serves each business (src/accounts/), and decryption over them: the
  // cache downloads through it.
  const upstreams = await openUpstreamRuntime(config, {
    logger,
    breaker,
    onOwnBreakerChange: breakerMetrics(metrics, 'own'),
    recordingKeys,
    clientDefaults: {
      ...options.upstream,
      onRetry: (event: RetryEvent) => metrics.upstreamRetries.inc({ reason: event.reason }),
      onRequest: (event: RequestEvent) =>
        metrics.upstreamRequests.inc({
          operation: event.operation,
          status: String(event.status ?? event.errorCode),
        }),
    },
  });
  const { upstream, accounts, accountStore, sealer, decryption } = upstreams;
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  const admission = await createAdmission(config, database, metrics);
  const countEvent = cacheEventMetrics(metrics);
  const runtime = await openCacheRuntime(config, {
    upstream: accounts.media,
    mediaFor: (businessId) => decryption.mediaFor(businessId),
    decryptStored: decryption.decryptStored,
    logger,
    onEvent: countEvent,
    gate: {
      admission,
      // The breaker of the account each download reads from: the main one, or an own account's.
      breaker: (account) => accounts.breakerFor(account),
      coldLimiter: coldDownloadLimiter(config),
      onRefused: (reason) => metrics.upstreamRejections.inc({ reason }),
    },
    evictor: {
      onEvicted: (reason, bytes) => {
        metrics.cacheEvictions.inc({ reason });
        metrics.cacheEvictedBytes.inc({ reason }, bytes);
      },
      onTotals: ({ files, bytes }) => {
        metrics.cacheFiles.set(files);
        metrics.cacheBytes.set(bytes);
      },
    },
  });
  const { cache } = runtime;
  // Partials of downloads that died long ago (lock free, older than an hour) are removed now and hourly.
  const sweep = () =>
    cache
      .sweep()
      .catch((err: unknown) => logger.warn({ err, event: 'sweep_failed' }, 'sweep of leftovers failed'));
  void sweep();
  const sweeper = setInterval(sweep, 3_600_000).unref();
  const audit = new AuditTrail({ logger, metrics, callLog: config.auditDb ? callLog : undefined });
  const state = new RecordingState(callLog, { cache, keep: config.keepAfterUpstreamDelete, logger });
  const prefetch = await startPrefetch(database, {
    cache,
    callLog,
    state,
    logger,
    metrics,
    config,
    accounts,
  });
  const drainState = new DrainState();
  const resolver = new RecordingResolver({ callLog, state, upstream, accounts });
  const limits = apiLimits(config);
  const deps: GatewayRuntime['deps'] = {
    config,
    logger,
    callLog,
    resolver,
    state,
    cache,
    upstream,
    accounts: { directory: accounts, store: accountStore, sealer },
    mediaFor: (businessId, account) => decryption.mediaFor(businessId, account),
    jwt: new JwtAuth(config.jwtSecret),
    signer: new PlaybackSigner(config.jwtSecret),
    audit,
    ...(prefetch === undefined ? {} : { prefetch }),
    drain: drainState,
    ...(limits === undefined ? {} : { apiLimiter: new RateLimiter(limits) }),
  };
  // Said once per turn-off, not per call: meanwhile the file-system calls of the cold and warm paths go
  // through the thread pool, which costs the event loop more (see io/sync-guard.ts). The guards are the
  // process's, so is the metric (observability/metrics.ts counts each turn-off once).
  const stopSyncOff = onSyncOff(({ guard, tookMs, offMs }) => {
    logger.warn(
      { event: 'sync_io_off', guard, tookMs: Math.round(tookMs * 10) / 10, offMs },
      'slow synchronous file-system calls: using the thread pool for a while',
    );
  });
  let closed = false;
  return {
    deps,
    callLog,
    cache,
    upstream,
    logger,
    stopPrefetch: async () => {
      await prefetch?.stop();
    },
    reloadRecordingKeys: () => decryption.reloadKeys(),
    close: async () => {
      if (closed) return;
      closed = true;
      stopSyncOff();
      clearInterval(sweeper);
      await prefetch?.close();
      await audit.close();
      await runtime.close();
      await admission.close();
      await upstreams.close();
      await callLog.close();
    },
  };
}

/** The prefetch queue and this process's prefetcher, as the recording-status webhook and shutdown see them. */
interface PrefetchRuntime extends Pick<PrefetchQueue, 'enqueue'> {
  /** Takes no more jobs (a draining process): what it held goes back to the queue for another worker. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens the prefetch queue in the call log's database and starts this process's prefetcher, or returns
 * `undefined` where the database has no queue (in-memory SQLite): prefetch is then off.
 */
async function startPrefetch(
  database: DatabaseTarget,
  deps: {
    cache: LocalRecordingCache;
    callLog: CallLog;
    /** Told of a recording a prefetch found deleted at Twilio. */
    state: RecordingState;
    logger: Logger;
    metrics: Metrics;
    config: Config;
    /** Which account each business's recordings are read from. */
    accounts: Pick<AccountDirectory, 'account'>;
  },
): Promise<PrefetchRuntime | undefined> {
  const { cache, callLog, state, logger, metrics, config, accounts } = deps;
  const queue = await openPrefetchQueue(database);
  if (queue === undefined) {
    logger.info({ event: 'prefetch_off' }, 'Prefetch is off: an in-memory database has no shared queue');
    return undefined;
  }
  const prefetcher = new Prefetcher({
    queue,
    cache,
    callLog,
    state,
    logger,
    concurrency: config.prefetchConcurrency,
    onOutcome: (outcome) => metrics.prefetchJobs.inc({ outcome }),
    accountOf: async (businessId) => (await accounts.account(businessId)).accountSid,
  });
  prefetcher.start();
  const readDepth = () =>
    queue.depth().then(
      (depth) => {
        for (const [state, n] of Object.entries(depth)) metrics.prefetchQueue.set({ state }, n);
      },
      (err: unknown) =>
        logger.warn({ err, event: 'prefetch_depth_failed' }, 'Could not read the prefetch queue'),
    );
  void readDepth();
  const depthReader = setInterval(readDepth, 10_000).unref();
  return {
    async enqueue(job) {
      await queue.enqueue(job);
      prefetcher.wake();
      void readDepth();
    },
    stop: () => prefetcher.close(),
    async close() {
      clearInterval(depthReader);
      await prefetcher.close();
      await queue.close();
    },
  };
}

/**
 * The upstream admission: this process's fair queue, and with `--upstream-concurrency-global` on a
 * PostgreSQL database, the slots every host shares.
 */
async function createAdmission(
  config: Config,
  database: ReturnType<typeof parseDatabaseUrl>,
  metrics: Metrics,
): Promise<Admission> {
  const local = {
    concurrency: config.upstreamConcurrency,
    maxQueue: config.upstreamQueueMax,
    timeoutMs: upstreamQueueTimeoutMs(config),
    onEvent: admissionMetrics(metrics),
  };
  if (config.upstreamConcurrencyGlobal === undefined || database.kind !== 'postgres') {
    return new LocalAdmission(local);
  }
  const { PostgresAdmission } = await import('./recordings/admission/postgres.js');
  return new PostgresAdmission({
    ...local,
    connectionString: database.connectionString,
    slots: config.upstreamConcurrencyGlobal,
    namespace: database.schema ?? '',
    schema: database.schema,
  });
}

/**
 * The per-business limit on new downloads, per host, as this worker's share of it (see {@link workerShare}).
 * `undefined` when it is off (0).
 */
function coldDownloadLimiter(config: Config): RateLimiter | undefined {
  if (config.coldDownloadRate <= 0) return undefined;
  return new RateLimiter(workerShare(config.coldDownloadRate, config.coldDownloadBurst, config.workers));
}

/** This process's share of the per-host API budget (see {@link workerShare}). None when the rate is 0. */
export function apiLimits(
  config: Pick<Config, 'apiRatePerS' | 'apiBurst' | 'workers'>,
): { ratePerS: number; burst: number } | undefined {
  if (config.apiRatePerS === 0) return undefined;
  return workerShare(config.apiRatePerS, config.apiBurst, config.workers);
}
