/**
 * Step 3: one exchange with the upstream. Asks for the whole recording, or, when the generation being
 * written can be resumed, for the rest of it with `Range` and `If-Range`; checks the response's headers
 * before a byte is used: a content type that is not audio is RECGATE_UPSTREAM_BAD_MEDIA, a 206 that does
 * not continue the generation exactly means starting over from byte 0.
 */
import { performance } from 'node:perf_hooks';
import { createError } from '../../errors.js';
import type { MediaResponse } from '../../upstream/upstream.js';
import { type ContentTypeVerdict, checkContentType } from '../media-check.js';
import type { PartialMeta, PartialWriter } from '../store/store.js';
import type { DownloadContext } from './context.js';

export interface Exchange {
  response: MediaResponse;
  /** `resume`: the body continues the generation at `offset`; `full`: the whole recording from byte 0. */
  kind: 'resume' | 'full';
  offset: number;
  /** What the Content-Type says the body is; the first bytes must agree. */
  declared: ContentTypeVerdict;
}

/** The upstream answered a range that does not continue the generation: fetch the whole recording instead. */
export class RestartFromZero extends Error {}

/** Upstream timing of one download, kept across its exchanges. */
export interface Transfer {
  started: number;
  /** Time to the first exchange's headers. */
  ttfbMs: number | undefined;
  /** Body bytes received from the upstream, all exchanges. */
  bytes: number;
}

export async function exchange(
  ctx: DownloadContext,
  from: PartialWriter | undefined,
  signal: AbortSignal,
  transfer: Transfer,
): Promise<Exchange> {
  const offset = from === undefined ? 0 : resumeOffset(from);
  ctx.seekAhead.downloadStarting();
  const response = await ctx.upstream.fetchMedia(ctx.ref.recordingSid, {
    signal,
    variant: ctx.ref.variant,
    account: ctx.ref.account,
    ...(offset > 0 ? { start: offset, ifRange: from!.meta.etag! } : {}),
  });
  transfer.ttfbMs ??= performance.now() - transfer.started;
  try {
    const declared = checkContentType(response.contentType);
    if (declared === 'bad') {
      throw createError('RECGATE_UPSTREAM_BAD_MEDIA', {
        cause: new Error(
          `the upstream answered ${response.status} with Content-Type ${response.contentType}`,
        ),
      });
    }
    if (offset > 0 && continues(response, offset, from!.meta))
      return { response, kind: 'resume', offset, declared };
    if (response.status === 206 && response.start !== 0) {
      throw new RestartFromZero(`unusable 206 from offset ${response.start} (asked for ${offset})`);
    }
    return { response, kind: 'full', offset: 0, declared };
  } catch (err) {
    response.body.destroy();
    throw err;
  }
}

/** Where a holder may resume the generation it writes, or 0 to fetch the whole recording. */
export function resumeOffset(writer: PartialWriter): number {
  const { meta, length } = writer;
  if (!meta.acceptsRanges || meta.etag === null || meta.size === null) return 0;
  return length > 0 && length < meta.size ? length : 0;
}

function continues(response: MediaResponse, offset: number, meta: PartialMeta): boolean {
  return (
    response.status === 206 &&
    response.start === offset &&
    response.totalSize === meta.size &&
    (response.etag === null || response.etag === meta.etag)
  );
}
