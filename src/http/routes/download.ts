import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { CallRecord } from '../../call-log/call-log.js';
import { createError } from '../../errors.js';
import { ClientGone } from '../../io/abort.js';
import { andThen, finallyAfter, type NowOrLater } from '../../io/now-or-later.js';
import { logsAt } from '../../observability/logger.js';
import { getMetrics } from '../../observability/metrics.js';
import { type CachedRecording, cacheKeyOf, type RecordingRef } from '../../recordings/cache.js';
import {
  contentTypeOf,
  fileNameOf,
  isCanonical,
  parseVariant,
  recordingEtag,
  type Variant,
  variantKey,
} from '../../recordings/variant.js';
import { serve } from '../../serving/serve.js';
import type { ByteSource } from '../../serving/source.js';
import { writeResult } from '../../serving/write.js';
import { type CallSid, parseCallSid } from '../../sid.js';
import { authenticateDownload } from '../auth.js';
import { ColdHeads } from '../cold-heads.js';
import type { AppDeps } from '../deps.js';

/** Longest a HEAD on a recording not cached waits for a turn beyond `--cold-head-concurrency`, ms. */
export const COLD_HEAD_WAIT_MS = 5000;

/** Recordings never change once complete, so browsers may keep them; `private` keeps shared caches out. */
export const RECORDING_CACHE_CONTROL = 'private, max-age=31536000, immutable';

/**
 * The first byte a `Range: bytes=N-…` request wants, before the size is known: lets the cache start a
 * seek-ahead fetch together with the download instead of one upstream first-byte time later. A hint only;
 * the Range header is parsed properly by serve() once the size is known.
 */
function rangeStartHint(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = RANGE_START.exec(header);
  return m ? Number(m[1]) : undefined;
}
const RANGE_START = /^bytes=(\d{1,15})-/i;

/** The headers Fastify set on the reply so far (the request id), as strings for a raw response. */
function headersOf(reply: FastifyReply): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = String(value);
  }
  return headers;
}

/**
 * What a HEAD on a recording not cached answers from: the size and dates of the upstream's own HEAD, with
 * the ETag a GET would give once it downloads. No bytes: serve() never reads a HEAD's body. `undefined` when
 * the upstream did not say the size (the request then goes the GET's way).
 */
async function upstreamHead(
  deps: AppDeps,
  ref: RecordingRef,
  businessId: string,
  signal: AbortSignal,
): Promise<ByteSource | undefined> {
  const upstream =
    deps.mediaFor?.(businessId, ref.account) ??
    (deps.accounts === undefined ? deps.upstream : await deps.accounts.directory.forAccount(ref.account));
  const head = await upstream.headMedia(ref.recordingSid, signal, ref.variant);
  if (head.size === null) return undefined;
  const upstreamDate = head.lastModified === null ? Number.NaN : Date.parse(head.lastModified);
  return {
    size: head.size,
    etag: recordingEtag(ref, head.size),
    // The same second a download would give the file (download/context.ts, identityOf).
    lastModified: new Date(Number.isNaN(upstreamDate) ? Number.NaN : Math.floor(upstreamDate / 1000) * 1000),
    createReadStream: () => {
      throw new Error('a HEAD has no body');
    },
  };
}

export function downloadRoutes(app: FastifyInstance, deps: AppDeps): void {
  const metrics = getMetrics();
  // One per process (per app): at most --cold-head-concurrency upstream HEADs at once, equal ones shared.
  const coldHeads = new ColdHeads({
    max: deps.config.coldHeadConcurrency,
    waitMs: COLD_HEAD_WAIT_MS,
    onBusy: () => metrics.upstreamRejections.inc({ reason: 'head_busy' }),
  });
  app.route({
    method: ['GET', 'HEAD'],
    url: '/api/calls/:callSid/download',
    exposeHeadRoute: false,
    handler: (request, reply) =>
      withRecording(deps, request, reply, (play) => {
        const { callSid, query, variant, businessId, ref, log, failed } = play;
        const attachment = query.download === '1';
        const serveOptions = {
          contentType: contentTypeOf(variant),
          cacheControl: RECORDING_CACHE_CONTROL,
          contentDisposition: `${attachment ? 'attachment' : 'inline'}; filename="${fileNameOf(variantKey(callSid, variant))}"`,
        };
        /** The recording's answer, written: from here on nothing waits. */
        const answer = (recording: CachedRecording): void => {
          const result = serve({ method: request.method, headers: request.headers }, recording, serveOptions);
          // Its fields are not even put together below the line's level (the warm play's usual case).
          if (logsAt(log, 'info')) {
            log.info(
              {
                event: 'serve',
                callSid,
                owner: ref.ownerCallSid,
                outcome: recording.outcome,
                status: result.statusCode,
              },
              'serving recording',
            );
          }
          if (result.body === undefined && result.stream === undefined) {
            reply.code(result.statusCode).headers(result.headers).send();
            return;
          }
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
                  businessId,
                  callSid,
                  recordingSid: ref.recordingSid,
                  bytes,
                  status: result.statusCode,
                  requestId: request.id,
                },
                log,
              ),
            sendTimeoutMs: deps.config.sendTimeoutMs,
            onSendTimeout: () => {
              metrics.connectionsCut.inc({ reason: 'send_timeout' });
              request.log.info({ event: 'send_timeout', callSid }, 'client stopped reading; response cut');
            },
          });
        };
        // The warm play: a finished file the cache trusts now is answered in this turn, HEADs included.
        let hit: CachedRecording | undefined;
        try {
          hit = deps.cache.openNow?.(ref, { log, businessId });
        } catch (err) {
          return failed(err);
        }
        if (hit !== undefined) return answer(hit);
        return (async () => {
          // A HEAD never starts a download. One this process runs already answers it, as it answers its GETs
          // (same size and validators), without another request to the upstream: under a stampede the HEADs
          // come in with the GETs.
          if (request.method === 'HEAD' && deps.cache.openRunning !== undefined) {
            const running = await deps.cache
              .openRunning(ref, { signal: () => play.signal, log, businessId })
              .catch(failed);
            if (running !== undefined) return answer(running);
          }
          // Else, on a recording not on disk, it asks the upstream's HEAD: no download, nothing stored. Equal
          // HEADs meanwhile share it, and at most --cold-head-concurrency ask at once (see cold-heads.ts).
          if (request.method === 'HEAD' && (await deps.cache.state(ref)).state !== 'cached') {
            const key = [businessId, ref.account ?? '', ref.recordingSid, cacheKeyOf(ref)].join(' ');
            const head = await coldHeads.run(
              key,
              (upstreamSignal) => upstreamHead(deps, ref, businessId, upstreamSignal).catch(failed),
              play.signal,
            );
            if (head !== undefined) {
              const result = serve({ method: 'HEAD', headers: request.headers }, head, serveOptions);
              request.log.info(
                {
                  event: 'serve',
                  callSid,
                  owner: ref.ownerCallSid,
                  outcome: 'head',
                  status: result.statusCode,
                },
                'serving recording',
              );
              reply.code(result.statusCode).headers(result.headers).send();
              return;
            }
          }
          const recording = await deps.cache
            .open(ref, {
              signal: () => play.signal,
              log,
              readStart: rangeStartHint(request.headers.range),
              businessId,
            })
            .catch(failed);
          answer(recording);
        })();
      }),
  });
}

/** What a route about a call's recording works with: see {@link withRecording}. */
export interface RecordingRequest {
  callSid: CallSid;
  query: Record<string, unknown>;
  /** The variant the query asks for (`channels`, `format`). */
  variant: Variant;
  businessId: string;
  /** The recording the call plays (its own or its parent's), of that variant. */
  ref: RecordingRef;
  log: Logger;
  /**
   * Aborted when the client goes away: ends this request's waits, never a download others share. Made when
   * first read, so read it only on the way to a wait (not in a destructuring of the whole object).
   */
  readonly signal: AbortSignal;
  /**
   * For a failure to get the recording (its download, a HEAD of it at the upstream): tells the resolution
   * state what it says (a recording deleted at Twilio is remembered, its copies go), then rejects with `err`.
   */
  failed(err: unknown): Promise<never>;
}

/**
 * The steps every route about a call's recording (download, peaks) starts with: the call SID, the variant,
 * the caller (bearer token or the call's playback URL), the call in the caller's business (404 otherwise),
 * and the recording it plays; then `use`, while the client is connected. Each step answers at once when it
 * has its answer in memory (a remembered token, a call read before, a stored resolution), so a warm play
 * reaches `use` in the same turn, and `use`'s own answer comes back as it is, value or promise.
 */
export function withRecording<T>(
  deps: AppDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  use: (recording: RecordingRequest) => NowOrLater<T>,
): NowOrLater<T> {
  const callSid = parseCallSid((request.params as { callSid: string }).callSid);
  const query = request.query as Record<string, unknown>;
  const variant = parseVariant(query);
  return andThen(authenticateDownload(deps, request, callSid), ({ businessId }) =>
    andThen(callOf(deps, businessId, callSid), (call) => {
      if (!call) throw createError('RECGATE_NOT_FOUND');
      const gone = new ClientGone(reply.raw, clientClosed);
      const log = request.log as Logger;
      const play = (resolved: RecordingRef) => {
        const ref = isCanonical(variant) ? resolved : { ...resolved, variant };
        return use({
          callSid,
          query,
          variant,
          businessId,
          ref,
          log,
          get signal() {
            return gone.signal;
          },
          failed: async (err) => {
            await deps.state.downloadFailed(ref, err, log);
            throw err;
          },
        });
      };
      return finallyAfter(
        () =>
          andThen(
            deps.resolver.resolveNow(call) ?? deps.resolver.resolve(call, () => gone.signal, log),
            play,
          ),
        () => gone.release(),
      );
    }),
  );
}

/** The call if it is in the business, at once from a call log that reads synchronously. */
function callOf(deps: AppDeps, businessId: string, callSid: CallSid): NowOrLater<CallRecord | undefined> {
  const { callLog } = deps;
  return callLog.getForBusinessNow !== undefined
    ? callLog.getForBusinessNow(businessId, callSid)
    : callLog.getForBusiness(businessId, callSid);
}

const clientClosed = () => createError('RECGATE_CLIENT_CLOSED');
