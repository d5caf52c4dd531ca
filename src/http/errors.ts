import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { createError, isRecgateError, type RecgateError } from '../errors.js';
import { getMetrics } from '../observability/metrics.js';
import type { RouteTable } from './route-table.js';

/** Maps Fastify's own errors (bad JSON, body too large, bad URL) onto the registry. */
function fromFastify(err: FastifyError): RecgateError {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return createError('RECGATE_PAYLOAD_TOO_LARGE', { cause: err });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return createError('RECGATE_UNSUPPORTED_MEDIA_TYPE', { cause: err });
    default:
      if (err.validation || (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)) {
        return createError('RECGATE_INVALID_REQUEST', { cause: err });
      }
      return createError('RECGATE_INTERNAL', { cause: err });
  }
}

export function sendError(reply: FastifyReply, err: RecgateError): FastifyReply {
  // Headers meant for a body we no longer send must not describe the error body.
  reply.removeHeader('content-range');
  reply.removeHeader('content-disposition');
  reply.removeHeader('etag');
  reply.removeHeader('last-modified');
  reply.removeHeader('accept-ranges');
  reply.removeHeader('cache-control');
  return reply
    .code(err.statusCode)
    .headers({ ...err.headers, 'cache-control': 'no-store' })
    .type('application/json; charset=utf-8')
    .send(err.toJSON());
}

/** A route's error as `{"error": {"code": "RECGATE_…", "message": …}}`, its internals logged only. */
export function handleError(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const err = isRecgateError(error)
    ? error
    : error instanceof Error && 'code' in error && String((error as FastifyError).code).startsWith('FST_')
      ? fromFastify(error as FastifyError)
      : createError('RECGATE_INTERNAL', { cause: error });
  if (err.statusCode >= 500) request.log.error({ err, code: err.code }, 'request failed');
  else
    request.log.info(
      { code: err.code, reason: err.cause instanceof Error ? err.cause.message : undefined },
      err.message,
    );
  return sendError(reply, err);
}

/**
 * Every error becomes `{"error": {"code": "RECGATE_…", "message": …}}`; internals go to the log only. A path
 * that `routes` serves under other methods answers 405 with `Allow`; any other unknown path, 404.
 */
export function installErrorHandlers(app: FastifyInstance, routes?: RouteTable): void {
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0]!;
    const allow = routes?.allowed(path) ?? [];
    if (allow.length === 0) return sendError(reply, createError('RECGATE_ROUTE_NOT_FOUND'));
    return sendError(
      reply,
      createError('RECGATE_METHOD_NOT_ALLOWED', { headers: { allow: allow.join(', ') } }),
    );
  });
}

/**
 * Answers what Node's HTTP parser refuses before any route runs (headers or a body not received within
 * the request timeouts, oversized headers, malformed HTTP) with our error shape, then closes the
 * connection: after such an error its bytes cannot be trusted to frame another request.
 */
export function clientErrorHandler(logger: Logger): (err: NodeJS.ErrnoException, socket: Socket) => void {
  const metrics = getMetrics();
  return (err, socket) => {
    // A reset connection has nobody left to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const error =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? createError('RECGATE_REQUEST_TIMEOUT', { cause: err })
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? createError('RECGATE_HEADERS_TOO_LARGE', { cause: err })
          : createError('RECGATE_INVALID_REQUEST', { cause: err });
    if (error.code === 'RECGATE_REQUEST_TIMEOUT') metrics.connectionsCut.inc({ reason: 'request_timeout' });
    logger.debug({ event: 'client_error', code: error.code, reason: err.code }, error.message);
    if (socket.writable) {
      const body = JSON.stringify(error.toJSON());
      socket.write(
        `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\n` +
          'Content-Type: application/json; charset=utf-8\r\n' +
          `Content-Length: ${Buffer.byteLength(body)}\r\n` +
          'Cache-Control: no-store\r\nConnection: close\r\n\r\n' +
          body,
      );
    }
    socket.destroy();
  };
}
