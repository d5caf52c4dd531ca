/**
 * Composition root: builds one process's gateway from its configuration. `recgate serve` calls it once per
 * worker; tests call it directly with port 0.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { JwtAuth } from './auth/jwt.js';
import { PlaybackSigner } from './auth/playback-url.js';
import type { CallLog } from './call-log/call-log.js';
import { openCallLog, parseDatabaseUrl } from './call-log/index.js';
import { type Config, upstreamQueueTimeoutMs } from './config/config.js';
import { buildApp } from './http/app.js';
import type { MetricsSource } from './http/routes/health.js';
import { uiRoutes } from './http/ui.js';
import { type DrainOptions, type DrainReport, DrainState, drainGateway } from './lifecycle/drain.js';
import { RateLimiter } from './limits/rate-limiter.js';
import { AuditTrail } from './observability/audit.js';
import { createLogger } from './observability/logger.js';
import {
  admissionMetrics,
  breakerMetrics,
  cacheEventMetrics,
  getMetrics,
  type Metrics,
} from './observability/metrics.js';
import { openPrefetchQueue, Prefetcher } from './prefetch/index.js';
import type { Admission } from './recordings/admission/admission.js';
import { LocalAdmission } from './recordings/admission/local.js';
import { openDecryption } from './recordings/decrypt/index.js';
import type { LocalRecordingCache } from './recordings/index.js';
import { RecordingResolver } from './resolution/resolver.js';
import { RecordingState } from './resolution/state.js';
import { openCacheRuntime } from './runtime.js';
import { UpstreamBreaker } from './upstream/breaker.js';
import { TwilioClient, type TwilioClientOptions } from './upstream/twilio-client.js';
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

export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  if (!config.jwtSecret) throw new Error('jwtSecret is required');
  if (!config.twilioAccountSid) throw new Error('TWILIO_ACCOUNT_SID is required');
  if (!config.twilioAuthToken && !config.twilioApiKey) {
    throw new Error('TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) is required');
  }
  const metrics = getMetrics();
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  const breaker = new UpstreamBreaker({ onChange: breakerMetrics(metrics) });
  const upstream = new TwilioClient({
    baseUrl: config.twilioApiBase,
    accountSid: config.twilioAccountSid,
    authToken: config.twilioAuthToken,
    apiKey: config.twilioApiKey,
    apiSecret: config.twilioApiSecret,
    ...options.upstream,
    breaker,
    logger,
    onRetry: (event) => metrics.upstreamRetries.inc({ reason: event.reason }),
    onRequest: (event) =>
      metrics.upstreamRequests.inc({
        operation: event.operation,
        status: String(event.status ?? event.errorCode),
      }),
  });
  // Every download and HEAD goes through it: it learns which recordings are encrypted, and opens them. A
  // bad key file is a start-up error naming the file.
  let decryption: ReturnType<typeof openDecryption>;
  try {
    decryption = openDecryption(upstream, config.recordingKeysDir, logger);
  } catch (err) {
    await upstream.close();
    await callLog.close();
    throw err;
  }
  const mediaFor = decryption.mediaFor;
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  const admission = await createAdmission(config, database, metrics);
  const countEvent = cacheEventMetrics(metrics);
  const runtime = await openCacheRuntime(config, {
    upstream,
    mediaFor,
    logger,
    onEvent: countEvent,
    gate: {
      admission,
      breaker,
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
  const prefetchQueue = await openPrefetchQueue(config.databaseUrl, config.dataDir);
  const prefetcher = new Prefetcher({
    queue: prefetchQueue,
    cache,
    callLog,
    logger,
    concurrency: config.prefetchConcurrency,
    onOutcome: (outcome) => metrics.prefetchJobs.inc({ outcome }),
  });
  prefetcher.start();
  const readDepth = () =>
    prefetchQueue.depth().then(
      (depth) => {
        for (const [state, n] of Object.entries(depth)) metrics.prefetchQueue.set({ state }, n);
      },
      (err: unknown) =>
        logger.warn({ err, event: 'prefetch_depth_failed' }, 'Could not read the prefetch queue'),
    );
  void readDepth();
  const depthReader = setInterval(readDepth, 10_000).unref();
  const state = new RecordingState(callLog);
  const drainState = new DrainState();
  const resolver = new RecordingResolver({ callLog, state, upstream });
  const limits = apiLimits(config);
  const app = await buildApp(
    {
      config,
      logger,
      callLog,
      resolver,
      state,
      cache,
      upstream,
      mediaFor,
      jwt: new JwtAuth(config.jwtSecret),
      signer: new PlaybackSigner(config.jwtSecret),
      audit,
      prefetch: {
        async enqueue(job) {
          await prefetchQueue.enqueue(job);
          prefetcher.wake();
          void readDepth();
        },
      },
      drain: drainState,
      ...(limits === undefined ? {} : { apiLimiter: new RateLimiter(limits) }),
    },
    { metrics: options.metrics, plugins: [uiRoutes] },
  );
  const address = await app.listen({ host: config.host, port: config.port });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    clearInterval(sweeper);
    clearInterval(depthReader);
    await app.close();
    await prefetcher.close();
    await audit.close();
    await runtime.close();
    await admission.close();
    await prefetchQueue.close();
    await upstream.close();
    await callLog.close();
  };
  return {
    app,
    url: address.replace('[::1]', 'localhost'),
    callLog,
    cache,
    upstream,
    logger,
    reloadRecordingKeys: () => decryption.reloadKeys(),
    close,
    drain: (drainOptions) => {
      // No new prefetch once the process starts to stop: its jobs go back to the queue for another worker.
      void prefetcher.close();
      return drainGateway({ app, state: drainState, logger, release: close }, drainOptions);
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
  });
}

/**
 * The per-business limit on new downloads, per host: under `--workers N` each worker allows 1/N of the rate
 * and of the burst (at least one), as a request may land on any worker. `undefined` when it is off (0).
 */
function coldDownloadLimiter(config: Config): RateLimiter | undefined {
  if (config.coldDownloadRate <= 0) return undefined;
  return new RateLimiter({
    ratePerS: config.coldDownloadRate / config.workers,
    burst: Math.max(1, Math.floor(config.coldDownloadBurst / config.workers)),
  });
}

/**
 * This process's share of the per-host API budget: under `--workers N`, each worker enforces rate/N and
 * burst/N (rounded up), since the primary spreads connections evenly among them. None when the rate is 0.
 */
export function apiLimits(
  config: Pick<Config, 'apiRatePerS' | 'apiBurst' | 'workers'>,
): { ratePerS: number; burst: number } | undefined {
  if (config.apiRatePerS === 0) return undefined;
  return {
    ratePerS: config.apiRatePerS / config.workers,
    burst: Math.ceil(config.apiBurst / config.workers),
  };
}
