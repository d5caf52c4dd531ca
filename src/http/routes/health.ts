import type { FastifyInstance } from 'fastify';
import { createError } from '../../errors.js';
import type { AppDeps } from '../deps.js';

export interface MetricsSource {
  contentType: string;
  /** The Prometheus text: this process's, or under --workers every worker's, aggregated. */
  text(): Promise<string>;
}

export function healthRoutes(app: FastifyInstance, deps: AppDeps, metrics: MetricsSource): void {
  let shuttingDown = false;
  app.addHook('onClose', async () => {
    shuttingDown = true;
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    if (shuttingDown) throw createError('RECGATE_SHUTTING_DOWN');
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

  app.get('/metrics', async (_request, reply) => {
    return reply
      .type(metrics.contentType)
      .header('cache-control', 'no-store')
      .send(await metrics.text());
  });
}
