import type { FastifyInstance } from 'fastify';
import { createError } from '../../errors.js';
import { requireToken } from '../auth.js';
import type { AppDeps } from '../deps.js';

export interface MetricsSource {
  contentType: string;
  /** The Prometheus text: this process's, or under --workers every worker's, aggregated. */
  text(): Promise<string>;
}

/**
 * /healthz (liveness: stays 200 while the process drains), /readyz (readiness: 503 from the first moment of a
 * drain), /metrics (behind a bearer token when RECGATE_METRICS_TOKEN is set). While draining, every response also closes its connection, so keep-alive clients and
 * load balancers reconnect to a process that stays.
 */
export function healthRoutes(app: FastifyInstance, deps: AppDeps, metrics: MetricsSource): void {
  let closing = false;
  app.addHook('onClose', async () => {
    closing = true;
  });
  const shuttingDown = () => closing || deps.drain?.started === true;
  app.addHook('onSend', async (_request, reply) => {
    if (deps.drain?.started) reply.header('connection', 'close');
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    if (shuttingDown()) throw createError('RECGATE_SHUTTING_DOWN');
    const [callLog, storage] = await Promise.all([
      deps.callLog.ping().catch(() => false),
      deps.cache.writable().catch(() => false),
    ]);
    // Upstream reachability is deliberately not a check: a Twilio outage must not take cached playback down.
    const ok = callLog && storage;
    return reply
      .code(ok ? 200 : 503)
      .send({ status: ok ? 'ready' : 'not_ready', checks: { call_log: callLog, storage } });
  });

  app.get('/metrics', async (request, reply) => {
    // With RECGATE_METRICS_TOKEN set, scrapers present it as a bearer token.
    const token = deps.config.metricsToken;
    if (token) requireToken(request, token);
    return reply
      .type(metrics.contentType)
      .header('cache-control', 'no-store')
      .send(await metrics.text());
  });
}
