import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { createError } from '../../errors.js';
import { getMetrics } from '../../observability/metrics.js';
import { serve } from '../../serving/serve.js';
import { writeResult } from '../../serving/write.js';
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

/** The headers Fastify set on the reply so far (the request id), as strings for a raw response. */
function headersOf(reply: FastifyReply): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = String(value);
  }
  return headers;
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
        if (!result.stream) return reply.code(result.statusCode).headers(result.headers).send();
        // The body is written by serving/write.ts rather than Fastify's pipe, so read buffers are reused
        // once flushed (constant memory under hundreds of concurrent downloads). onResponse hooks still run.
        reply.hijack();
        const length = Number(result.headers['content-length'] ?? 0);
        writeResult(reply.raw, result, {
          headers: headersOf(reply),
          flushHeaders: !recording.complete,
          // Counted when the whole body went out; an aborted response counts nothing.
          onFinish: () => metrics.bytesServed.inc({ status: String(result.statusCode) }, length),
          // Every response with a body is a play, with the bytes the client actually took.
          onClose: (bytes) =>
            deps.audit.play(
              {
                playedAt: new Date().toISOString(),
                businessId,
                callSid,
                recordingSid: ref.recordingSid,
                bytes,
                status: result.statusCode,
                requestId: request.id,
              },
              log,
            ),
        });
        return reply;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  });
}
