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
import { type Config, recordingsDir } from './config/config.js';
import { buildApp } from './http/app.js';
import type { MetricsSource } from './http/routes/health.js';
import { uiRoutes } from './http/ui.js';
import { RateLimiter } from './limits/rate-limiter.js';
import { createLogger } from './observability/logger.js';
import { cacheEventMetrics, getMetrics } from './observability/metrics.js';
import { createRecordingCache, type LocalRecordingCache } from './recordings/index.js';
import { RecordingResolver } from './resolution/resolver.js';
import { RecordingState } from './resolution/state.js';
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
  close(): Promise<void>;
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
  const upstream = new TwilioClient({
    baseUrl: config.twilioApiBase,
    accountSid: config.twilioAccountSid,
    authToken: config.twilioAuthToken,
    apiKey: config.twilioApiKey,
    apiSecret: config.twilioApiSecret,
    ...options.upstream,
    logger,
    onRetry: (event) => metrics.upstreamRetries.inc({ reason: event.reason }),
    onRequest: (event) =>
      metrics.upstreamRequests.inc({
        operation: event.operation,
        status: String(event.status ?? event.errorCode),
      }),
  });
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  const lockBackend = config.lockBackend ?? (database.kind === 'postgres' ? 'postgres' : 'fs');
  // Several hosts over shared storage need a lock they all see; the call log's PostgreSQL is one. Its
  // fencing table goes in the call log's schema, which openCallLog has created by now.
  const locker =
    lockBackend === 'postgres' && database.kind === 'postgres'
      ? new (await import('./recordings/lock/postgres.js')).PostgresLocker({
          connectionString: database.connectionString,
          ...(database.schema === undefined ? {} : { schema: database.schema }),
        })
      : undefined;
  const cache = createRecordingCache({
    dir: recordingsDir(config),
    upstream,
    ...(locker ? { locker } : {}),
    logger,
    lockTimeoutMs: config.lockTimeoutMs,
    onEvent: cacheEventMetrics(metrics),
  });
  // Partials of downloads that died long ago (lock free, older than an hour) are removed now and hourly.
  const sweep = () =>
    cache
      .sweep()
      .catch((err: unknown) => logger.warn({ err, event: 'sweep_failed' }, 'sweep of leftovers failed'));
  void sweep();
  const sweeper = setInterval(sweep, 3_600_000).unref();
  const state = new RecordingState(callLog);
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
      jwt: new JwtAuth(config.jwtSecret),
      signer: new PlaybackSigner(config.jwtSecret),
      ...(limits === undefined ? {} : { apiLimiter: new RateLimiter(limits) }),
    },
    { metrics: options.metrics, plugins: [uiRoutes] },
  );
  const address = await app.listen({ host: config.host, port: config.port });
  let closed = false;
  return {
    app,
    url: address.replace('[::1]', 'localhost'),
    callLog,
    cache,
    upstream,
    logger,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweeper);
      await app.close();
      await cache.close();
      await upstream.close();
      await locker?.close();
      await callLog.close();
    },
  };
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
