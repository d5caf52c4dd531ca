/**
 * What every recgate request carries, wherever its routes are mounted (`recgate serve`'s app, and an
 * embedding app's, see src/embed/): an `x-request-id` answer header (the client's own id when it sent a
 * well-formed one), the request metrics (`recgate_http_requests_total`, `recgate_http_request_duration_seconds`),
 * and one `request completed` log line at info, with secrets stripped from the URL (where recgate owns the
 * server; in a host's Fastify app the host's own request logging, if on, writes that line).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { redactUrl } from '../observability/logger.js';
import { getMetrics, type Metrics } from '../observability/metrics.js';

/**
 * Fastify's server options for request ids: `x-request-id` taken when well formed, else a new UUID. (Not
 * Fastify's `requestIdHeader`: with it, Fastify takes any value the header has and never asks `genReqId`.)
 */
export const requestIdOptions = {
  requestIdHeader: false,
  genReqId: (req: IncomingMessage): string => {
    const given = req.headers['x-request-id'];
    return typeof given === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : randomUUID();
  },
} as const;

/**
 * Adds the hooks to `app` (in its encapsulation context: a plugin's hooks see only the plugin's routes).
 * Hooks take a callback rather than return a promise: they run on every request, the warm ones included.
 */
export function observeRequests(
  app: FastifyInstance,
  options: { metrics?: Metrics; log?: boolean } = {},
): void {
  const { metrics = getMetrics(), log: logLine = true } = options;
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    (request as unknown as { startedAt: bigint }).startedAt = process.hrtime.bigint();
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const started = (request as unknown as { startedAt?: bigint }).startedAt;
    const seconds = started ? Number(process.hrtime.bigint() - started) / 1e9 : 0;
    metrics.httpRequests.inc({ route, method: request.method, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ route, method: request.method }, seconds);
    const log = request.log as Logger;
    if (logLine && log.isLevelEnabled('info')) {
      log.info(
        {
          req: { method: request.method, url: redactUrl(request.url), range: request.headers.range },
          res: { statusCode: reply.statusCode },
          ms: Math.round(seconds * 1000),
        },
        'request completed',
      );
    }
    done();
  });
}
