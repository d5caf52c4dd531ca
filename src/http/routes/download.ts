import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createError } from '../../errors.js';
import { getMetrics } from '../../observability/metrics.js';
import { pumpTo } from '../../serving/chunks.js';
import { serve } from '../../serving/serve.js';
import { parseCallSid } from '../../sid.js';
import { authenticateDownload } from '../auth.js';
import type { AppDeps } from '../deps.js';

/** Recordings never change once complete, so browsers may keep them; `private` keeps shared caches out. */
export const RECORDING_CACHE_CONTROL = 'private, max-age=31536000, immutable';

/**
 * The first byte a `Range: bytes=N-…` request wants, before the size is known: lets the cache start a
 * seek-ahead fetch together with the download instead of one upstream first-byte time later. A hint only;
 * the Range header is parsed properly by serve() once the size is known.
 */
function rangeStartHint(header: string | undefined): number | undefined {
  const m = header === undefined ? null : /^bytes=(\d{1,15})-/i.exec(header);
  return m ? Number(m[1]) : undefined;
}

export function downloadRoutes(app: FastifyInstance, deps: AppDeps): void {
  const metrics = getMetrics();
  app.route({
    method: ['GET', 'HEAD'],
    url: '/api/calls/:callSid/download',
    exposeHeadRoute: false,
    handler: async (request, reply) => {
      const callSid = parseCallSid((request.params as { callSid: string }).callSid);
      const { businessId } = await authenticateDownload(deps, request, callSid);
      const call = await deps.callLog.getForBusiness(businessId, callSid);
      if (!call) throw createError('RECGATE_NOT_FOUND');

      // Aborts our wait (not the shared download) when this client goes away.
      const abort = new AbortController();
      const onClose = () => abort.abort(createError('RECGATE_CLIENT_CLOSED'));
      reply.raw.once('close', onClose);
      try {
        const log = request.log as Logger;
        const ref = await deps.resolver.resolve(call, abort.signal, log);
        let recording: Awaited<ReturnType<typeof deps.cache.open>>;
        try {
          recording = await deps.cache.open(ref, {
            signal: abort.signal,
            log,
            readStart: rangeStartHint(request.headers.range),
          });
        } catch (err) {
          await deps.state.downloadFailed(ref, err);
          throw err;
        }
        const attachment = (request.query as Record<string, unknown>).download === '1';
        const result = serve({ method: request.method, headers: request.headers }, recording, {
          contentType: 'audio/mpeg',
          cacheControl: RECORDING_CACHE_CONTROL,
          contentDisposition: `${attachment ? 'attachment' : 'inline'}; filename="${callSid}.mp3"`,
        });
        request.log.info(
          {
            event: 'serve',
            callSid,
            owner: ref.ownerCallSid,
            outcome: recording.outcome,
            status: result.statusCode,
          },
          'serving recording',
        );
        reply.code(result.statusCode).headers(result.headers);
        if (!result.stream) return reply.send();
        const length = Number(result.headers['content-length'] ?? 0);
        // Counted when the whole body went out; an aborted response counts nothing.
        reply.raw.once('finish', () =>
          metrics.bytesServed.inc({ status: String(result.statusCode) }, length),
        );
        // The body is written by pumpTo rather than Fastify's pipe, so read buffers are reused once flushed
        // (constant memory under hundreds of concurrent downloads). onResponse hooks still run.
        reply.hijack();
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(reply.getHeaders())) {
          if (value !== undefined) headers[name] = String(value);
        }
        reply.raw.writeHead(result.statusCode, headers);
        // Node holds the status line back until the first body byte; a client waiting on a range the
        // download has not reached yet should have its 206 and Content-Range now.
        if (!recording.complete) reply.raw.flushHeaders();
        pumpTo(result.stream, reply.raw);
        return reply;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  });
}
