/**
 * The gateway's HTTP layer. The request path reads top to bottom in `src/`:
 * http (this folder) → auth → call-log → resolution → recordings (cache) → upstream, with serving/ turning a
 * cached recording into an RFC 9110 response.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { createError } from '../errors.js';
import { lazyChild } from '../observability/logger.js';
import { getMetrics } from '../observability/metrics.js';
import type { AppDeps } from './deps.js';
import { clientErrorHandler, installErrorHandlers, sendError } from './errors.js';
import { observeRequests, requestIdOptions } from './observe.js';
import { apiPlugin } from './plugin.js';
import { trackRoutes } from './route-table.js';
import { accountRoutes } from './routes/accounts.js';
import { adminRoutes } from './routes/admin.js';
import { healthRoutes, type MetricsSource } from './routes/health.js';
import { webhookRoutes } from './routes/webhooks.js';

export interface AppOptions {
  /** Where /metrics reads from; defaults to this process's registry. */
  metrics?: MetricsSource;
  /** Extra routes (the web UI) registered after the API. */
  plugins?: Array<(app: FastifyInstance) => void | Promise<void>>;
}

/** How many Host field lines a request has (rawHeaders: name, value, name, value, …, as received). */
function hostLines(rawHeaders: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === 'host') n++;
  return n;
}

export async function buildApp(deps: AppDeps, options: AppOptions = {}): Promise<FastifyInstance> {
  const metrics = getMetrics();
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per request, written in onResponse below with the fields we want (and secrets stripped).
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.config.bodyLimitBytes,
    // The limits of "Limits and timeouts" in the README. A connection with no request in progress is
    // closed after the idle timeout (connectionTimeout before its first request, keepAliveTimeout between
    // requests); while a request runs, the request timeout bounds its receipt and the send timeout
    // (serving/write.ts) the response. Node checks the header and request timeouts every
    // connectionsCheckingInterval, so that interval bounds how late they cut.
    connectionTimeout: deps.config.idleTimeoutMs,
    keepAliveTimeout: deps.config.idleTimeoutMs,
    requestTimeout: deps.config.requestTimeoutMs,
    http: {
      headersTimeout: deps.config.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, deps.config.headersTimeoutMs),
    },
    clientErrorHandler: clientErrorHandler(deps.logger),
    // A request's logger is made when it first logs (most warm requests log nothing below info).
    childLoggerFactory: (logger, bindings, opts) =>
      opts.level === undefined && opts.serializers === undefined
        ? (lazyChild(logger as Logger, bindings) as FastifyBaseLogger)
        : logger.child(bindings, opts),
    ...requestIdOptions,
    routerOptions: { maxParamLength: 200 },
    // Malformed URLs (bad percent-encoding and the like) get our error shape, not Fastify's.
    frameworkErrors: (error, _request, reply) => {
      sendError(reply, createError('RECGATE_INVALID_REQUEST', { cause: error }));
    },
  });

  if (deps.config.maxConnections > 0) app.server.maxConnections = deps.config.maxConnections;
  observeRequests(app, { metrics });
  app.addHook('onRequest', (request, _reply, done) => {
    // The idle timeout is for connections between requests; a request in progress is bounded by the
    // request and send timeouts instead (a client waiting for a cold download may see no byte for a while).
    // (inject()'s requests, from tests and embedders, come on a stand-in socket without timers.)
    const socket = request.raw.socket as { setTimeout?: (ms: number) => unknown } | undefined;
    if (typeof socket?.setTimeout === 'function') socket.setTimeout(0);
    // RFC 9112 §3.2: more than one Host field line MUST get a 400. Node keeps the first and drops the
    // others silently, and playback URLs are built from the Host when no public URL is configured.
    if (hostLines(request.raw.rawHeaders) > 1) {
      done(createError('RECGATE_INVALID_REQUEST', { message: 'More than one Host header' }));
      return;
    }
    done();
  });

  installErrorHandlers(app, trackRoutes(app));
  await app.register(apiPlugin, { deps });
  adminRoutes(app, deps);
  accountRoutes(app, deps);
  webhookRoutes(app, deps);
  healthRoutes(
    app,
    deps,
    options.metrics ?? { contentType: metrics.registry.contentType, text: () => metrics.registry.metrics() },
  );
  for (const plugin of options.plugins ?? []) await plugin(app);
  return app;
}
