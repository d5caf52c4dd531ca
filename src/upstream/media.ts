/**
 * Media responses: the Range a {@link MediaRequest} asks for, a 200 or 206 read into a {@link MediaResponse}
 * (Content-Length, Content-Range, ETag, Last-Modified, Content-Type, Accept-Ranges), and the guard around
 * its body that turns a short, long, broken or stalled body into an error instead of a quiet end.
 */
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { createError } from '../errors.js';
import { abortError, discard, errorCode, headerValue } from './http-util.js';
import { isNonNegativeInt } from './options.js';
import type { MediaHead, MediaRequest, MediaResponse } from './upstream.js';

/** The `Range` header for `request`, or `undefined` for the whole file. Throws a TypeError for a bad range. */
export function rangeHeader(request: MediaRequest): string | undefined {
  const { start, end } = request;
  if (start === undefined && end === undefined) return undefined;
  if (start !== undefined && !isNonNegativeInt(start)) {
    throw new TypeError('request.start must be a non-negative integer');
  }
  if (end !== undefined && (!isNonNegativeInt(end) || end < (start ?? 0))) {
    throw new TypeError('request.end must be an integer not below request.start');
  }
  return `bytes=${start ?? 0}-${end ?? ''}`;
}

/**
 * A 200 or 206 media response as a {@link MediaResponse}, its body guarded (see {@link guardBody}). Throws
 * RECGATE_UPSTREAM_UNAVAILABLE, and drops the body, for a 206 without a usable Content-Range.
 */
export function toMediaResponse(
  sid: string,
  res: Dispatcher.ResponseData,
  signal: AbortSignal | undefined,
): MediaResponse {
  const contentLength = parseNonNegativeInt(headerValue(res.headers['content-length']));
  let status: 200 | 206 = 200;
  let start = 0;
  let totalSize = contentLength;
  if (res.statusCode === 206) {
    const contentRange = headerValue(res.headers['content-range']);
    const range = parseContentRange(contentRange);
    if (range === undefined) {
      discard(res.body);
      throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
        cause: new Error(
          `fetchMedia ${sid}: 206 with unusable Content-Range ${JSON.stringify(contentRange)}`,
        ),
      });
    }
    status = 206;
    start = range.start;
    totalSize = range.totalSize;
  }
  const acceptRanges = headerValue(res.headers['accept-ranges']);
  return {
    status,
    contentLength,
    start,
    totalSize,
    etag: headerValue(res.headers.etag),
    lastModified: headerValue(res.headers['last-modified']),
    contentType: headerValue(res.headers['content-type']),
    acceptsRanges: status === 206 || (acceptRanges !== null && /\bbytes\b/i.test(acceptRanges)),
    body: guardBody(res.body, contentLength, signal, endsWithConnection(res.headers, contentLength)),
  };
}

/** A 200 answer to a HEAD on the media as a {@link MediaHead}; its (empty) body is dropped. */
export function toMediaHead(res: Dispatcher.ResponseData): MediaHead {
  discard(res.body);
  const acceptRanges = headerValue(res.headers['accept-ranges']);
  return {
    size: parseNonNegativeInt(headerValue(res.headers['content-length'])),
    etag: headerValue(res.headers.etag),
    lastModified: headerValue(res.headers['last-modified']),
    contentType: headerValue(res.headers['content-type']),
    acceptsRanges: acceptRanges !== null && /\bbytes\b/i.test(acceptRanges),
  };
}

/** `Content-Range: bytes first-last/total` (total may be `*`); `undefined` when absent or unusable. */
export function parseContentRange(
  value: string | null,
): { start: number; end: number; totalSize: number | null } | undefined {
  const match = value === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim());
  if (match === null) return undefined;
  return {
    start: Number(match[1]),
    end: Number(match[2]),
    totalSize: match[3] === '*' ? null : Number(match[3]),
  };
}

function parseNonNegativeInt(value: string | null): number | null {
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Whether the connection ends with this response: `Connection: close`, or a body delimited by the close
 * (neither Content-Length nor chunked). Such a body must be read without backpressure (see {@link guardBody}).
 */
export function endsWithConnection(
  headers: Dispatcher.ResponseData['headers'],
  contentLength: number | null,
): boolean {
  const connection = headerValue(headers.connection);
  if (connection !== null && /(^|,)\s*close\s*(,|$)/i.test(connection)) return true;
  const encoding = headerValue(headers['transfer-encoding']);
  return contentLength === null && (encoding === null || !/chunked/i.test(encoding));
}

/**
 * Wraps an undici body so that it errors, never ends quietly, when fewer (or more) bytes than
 * Content-Length arrive, and maps undici's errors to RecgateErrors (an abort stays an AbortError).
 *
 * Bytes that arrived before a break are delivered before the error: the reader may still be opening its
 * file when the connection breaks, and what the upstream did send is what a resume continues from. (A plain
 * `destroy(err)` drops whatever is buffered and unread: a reader that started late then saw nothing, and
 * every resume started from the same offset again.) An abort is delivered at once.
 *
 * With `eager`, the body is read as fast as it arrives, whatever the reader's pace (the bytes wait in
 * this stream instead), so undici's parser never pauses for backpressure. undici 7 crashes the process
 * with an uncatchable `assert(!this.paused)` when a connection that ends with its response (see
 * {@link endsWithConnection}) sends its FIN while the parser is paused (nodejs/undici#5360, fixed only
 * in undici 8, which needs Node 22). The cost: such a body can sit in memory up to its size while the
 * disk is slower than the network. Without it, the source is paused while a highWaterMark's worth waits.
 */
export function guardBody(
  source: Readable,
  expected: number | null,
  signal: AbortSignal | undefined,
  eager: boolean,
): Readable {
  const out = new LengthGuard(expected, eager ? undefined : source);
  source.on('error', (err: unknown) => {
    if (signal?.aborted) out.destroy(abortError(signal));
    else out.fail(bodyFailure(err, out.received, expected));
  });
  source.on('data', (chunk: Buffer) => out.feed(chunk));
  source.on('end', () => out.finish());
  out.on('close', () => {
    if (!source.destroyed) source.destroy();
  });
  // The caller may still be opening its file when the connection breaks: an error emitted before anyone
  // listens must not crash the process. The stream stays errored, so a later reader gets the error at once.
  out.on('error', () => {});
  return out;
}

/** Bytes queued before a source read with backpressure is paused. */
const QUEUE_LIMIT = 64 * 1024;

/**
 * A body's bytes as they came, then its end, or its error once every byte that came before it was read.
 * Errors when it carries more or fewer bytes than `expected` (when known).
 */
class LengthGuard extends Readable {
  readonly #expected: number | null;
  /** Paused while the queue holds a highWaterMark's worth; `undefined` when the source is read eagerly. */
  readonly #source: Readable | undefined;
  readonly #queue: Buffer[] = [];
  #queued = 0;
  #wanted = false;
  #ended = false;
  #failure: Error | undefined;
  received = 0;

  constructor(expected: number | null, source: Readable | undefined) {
    // No buffer of its own beyond the chunk being handed over: the queue below is the buffer, so that when
    // the error is delivered nothing already pushed is still unread (destroy would drop it).
    super({ highWaterMark: 0 });
    this.#expected = expected;
    this.#source = source;
  }

  feed(chunk: Buffer): void {
    if (this.destroyed || this.#ended || this.#failure !== undefined) return;
    this.received += chunk.length;
    const expected = this.#expected;
    if (expected !== null && this.received > expected) {
      this.#source?.destroy();
      this.fail(
        bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `received more than the ${expected} bytes announced`),
      );
      return;
    }
    this.#queue.push(chunk);
    this.#queued += chunk.length;
    if (this.#source !== undefined && this.#queued >= QUEUE_LIMIT) this.#source.pause();
    this.#deliver();
  }

  finish(): void {
    const expected = this.#expected;
    if (expected !== null && this.received < expected) {
      this.fail(
        bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `ended after ${this.received} of ${expected} bytes`),
      );
      return;
    }
    this.#ended = true;
    this.#deliver();
  }

  /** Errors with `failure` once the bytes already queued are read. */
  fail(failure: Error): void {
    this.#failure ??= failure;
    this.#deliver();
  }

  override _read(): void {
    this.#wanted = true;
    this.#deliver();
  }

  #deliver(): void {
    while (this.#wanted && this.#queue.length > 0) {
      const chunk = this.#queue.shift()!;
      this.#queued -= chunk.length;
      this.#wanted = this.push(chunk);
    }
    if (this.#queue.length > 0) return;
    this.#source?.resume();
    if (this.#ended) this.push(null);
    // Once the reader took the last chunk (it asks for more with an empty buffer): then the error.
    else if (this.#failure !== undefined && this.readableLength === 0) this.destroy(this.#failure);
  }
}

/** undici's error for a body that broke after `received` bytes, as a RecgateError. */
function bodyFailure(err: unknown, received: number, expected: number | null) {
  const code = errorCode(err);
  if (code === 'UND_ERR_BODY_TIMEOUT') {
    return bodyError('RECGATE_UPSTREAM_TIMEOUT', `stalled after ${received} bytes`, err);
  }
  if (
    code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' ||
    (code === 'UND_ERR_SOCKET' && /other side closed/.test((err as Error).message))
  ) {
    // A clean close (FIN) before Content-Length bytes: undici reports it in one of these two ways.
    return bodyError(
      'RECGATE_UPSTREAM_UNAVAILABLE',
      `ended after ${received} of ${expected ?? '?'} bytes`,
      err,
    );
  }
  return bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `broke after ${received} bytes`, err);
}

function bodyError(
  code: 'RECGATE_UPSTREAM_UNAVAILABLE' | 'RECGATE_UPSTREAM_TIMEOUT',
  what: string,
  cause?: unknown,
) {
  return createError(code, {
    message: `The recording download from the provider ${what}`,
    cause: cause ?? new Error(`upstream media body ${what}`),
  });
}
