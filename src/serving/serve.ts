/**
 * The serving core: turns a GET or HEAD and a {@link ByteSource} into a status, headers and a body stream,
 * following RFC 9110's conditional (§13) and range (§14) rules. Like @fastify/send it returns the response
 * instead of writing it, so it is testable without a server and any framework can write the result.
 *
 * Outcomes:
 * - 412 when If-Match or If-Unmodified-Since fails; 304 when If-None-Match or If-Modified-Since says the
 *   client's copy is current (evaluation order of RFC 9110 §13.2.2, see conditional.ts).
 * - Range only for GET (RFC 9110 §14.2 defines range handling for GET alone), only when If-Range, if
 *   present, matches. One range: 206 with Content-Range. Several: 206 `multipart/byteranges` with an
 *   exactly computed Content-Length. No satisfiable range: 416 with `Content-Range: bytes * /size`.
 *   Ignored ranges (see range.ts): 200 with the whole representation.
 * - An empty representation is always answered 200 with an empty body: every range over zero bytes is
 *   unsatisfiable, and a 416 for `bytes=0-` on an empty file only confuses media players.
 * - HEAD gets the headers a GET without Range would get, and no stream.
 *
 * Streams are created here but consumed by the caller, which must destroy the stream if the client goes
 * away; destroying a multipart stream destroys the part stream it is reading.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { createError } from '../errors.js';
import { evaluatePreconditions, formatHttpDate, type HeaderValues, ifRangeAllows } from './conditional.js';
import { type ByteRange, contentRange, parseRange, type RangeResult, unsatisfiedRange } from './range.js';
import type { ByteSource } from './source.js';

export interface ServeRequest {
  /** GET or HEAD (case-insensitive); the router answers other methods. */
  readonly method: string;
  /** Request headers as Node gives them; names are matched case-insensitively. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

export interface ServeOptions {
  /**
   * Content-Type of the representation.
   * @default 'application/octet-stream'
   */
  contentType?: string | undefined;
  /** Cache-Control to send on 200, 206, 304, 412 and 416; none when unset. */
  cacheControl?: string | undefined;
  /** Content-Disposition to send with the representation; none when unset. */
  contentDisposition?: string | undefined;
  /**
   * Most range-specs a Range header may list before it is ignored (see range.ts).
   * @default 16
   */
  maxRanges?: number | undefined;
}

export interface ServeResult {
  readonly statusCode: 200 | 206 | 304 | 412 | 416;
  /** Response headers, canonical capitalization. */
  readonly headers: Record<string, string>;
  /** The body; absent for HEAD, 304, 412 and 416 (whose Content-Length is then 0 or the GET's length). */
  readonly stream?: Readable;
  /**
   * The whole body at once, when the source had it at hand ({@link ByteSource.readNow}: a small range of a
   * cached file). `stream` then reads these same bytes, but a writer should send this buffer and skip the
   * stream (`write.ts` does): no stream is made unless `stream` is read.
   */
  readonly body?: Buffer;
}

/**
 * Answers `request` from `source`. Throws RECGATE_METHOD_NOT_ALLOWED (with `Allow`) for methods other
 * than GET and HEAD, and RECGATE_INTERNAL for invalid options.
 */
export function serve(request: ServeRequest, source: ByteSource, options: ServeOptions = {}): ServeResult {
  const { contentType, cacheControl, contentDisposition, maxRanges } = validateOptions(options);
  const method = request.method.toUpperCase();
  if (method !== 'GET' && method !== 'HEAD') {
    throw createError('RECGATE_METHOD_NOT_ALLOWED', { headers: { Allow: 'GET, HEAD' } });
  }
  const headers = normalizeHeaders(request.headers);
  const size = source.size;

  const validatorHeaders: Record<string, string> = { ETag: source.etag };
  if (!Number.isNaN(source.lastModified.getTime())) {
    validatorHeaders['Last-Modified'] = httpDateOf(source.lastModified);
  }
  if (cacheControl !== undefined) validatorHeaders['Cache-Control'] = cacheControl;

  const precondition = evaluatePreconditions(method, headers, source);
  if (precondition === 'not-modified') return { statusCode: 304, headers: validatorHeaders };
  if (precondition === 'precondition-failed') {
    return { statusCode: 412, headers: { ...validatorHeaders, 'Content-Length': '0' } };
  }

  const rangeHeader = headers.range;
  const ifRange = headers['if-range'];
  let range: RangeResult = { kind: 'none' };
  if (
    method === 'GET' &&
    rangeHeader !== undefined &&
    size > 0 &&
    (ifRange === undefined || ifRangeAllows(ifRange, source))
  ) {
    range = parseRange(rangeHeader, size, { maxRanges });
  }

  // The validators are the response's first headers; 304 and 412 returned them above.
  const responseHeaders = validatorHeaders;
  responseHeaders['Accept-Ranges'] = 'bytes';
  const withBody = method === 'GET';

  if (range.kind === 'unsatisfiable') {
    responseHeaders['Content-Range'] = unsatisfiedRange(size);
    responseHeaders['Content-Length'] = '0';
    return { statusCode: 416, headers: responseHeaders };
  }

  if (contentDisposition !== undefined) responseHeaders['Content-Disposition'] = contentDisposition;

  if (range.kind === 'ranges' && range.ranges.length === 1) {
    const { start, end } = range.ranges[0]!;
    responseHeaders['Content-Type'] = contentType;
    responseHeaders['Content-Length'] = String(end - start + 1);
    responseHeaders['Content-Range'] = contentRange(start, end, size);
    return withBody
      ? withRange(206, responseHeaders, source, start, end)
      : { statusCode: 206, headers: responseHeaders };
  }

  if (range.kind === 'ranges') {
    const boundary = randomBytes(16).toString('hex');
    const plan = planMultipart(range.ranges, size, contentType, boundary);
    responseHeaders['Content-Type'] = `multipart/byteranges; boundary=${boundary}`;
    responseHeaders['Content-Length'] = String(plan.length);
    return withBody
      ? { statusCode: 206, headers: responseHeaders, stream: new MultipartStream(source, plan) }
      : { statusCode: 206, headers: responseHeaders };
  }

  responseHeaders['Content-Type'] = contentType;
  responseHeaders['Content-Length'] = String(size);
  if (!withBody) return { statusCode: 200, headers: responseHeaders };
  if (size === 0) return { statusCode: 200, headers: responseHeaders, stream: Readable.from([]) };
  return withRange(200, responseHeaders, source, 0, size - 1);
}

/** A body of bytes `start..end`: at once when the source has them at hand, else a stream of them. */
function withRange(
  statusCode: 200 | 206,
  headers: Record<string, string>,
  source: ByteSource,
  start: number,
  end: number,
): ServeResult {
  const bytes = source.readNow?.(start, end);
  if (bytes === undefined) return { statusCode, headers, stream: source.createReadStream(start, end) };
  return new BodyAtHand(statusCode, headers, bytes);
}

/** A result whose body is one buffer; its stream (of the same bytes) is made only if read. */
class BodyAtHand implements ServeResult {
  #stream: Readable | undefined;

  constructor(
    readonly statusCode: 200 | 206,
    readonly headers: Record<string, string>,
    readonly body: Buffer,
  ) {}

  get stream(): Readable {
    this.#stream ??= Readable.from([this.body]);
    return this.#stream;
  }
}

/** Formatted Last-Modified dates by Date object: a cached recording's is the same object on every request. */
const httpDates = new WeakMap<Date, { time: number; text: string }>();

function httpDateOf(date: Date): string {
  const time = date.getTime();
  let known = httpDates.get(date);
  if (known?.time !== time) {
    known = { time, text: formatHttpDate(date) };
    httpDates.set(date, known);
  }
  return known.text;
}

interface ResolvedOptions {
  contentType: string;
  cacheControl: string | undefined;
  contentDisposition: string | undefined;
  maxRanges: number | undefined;
}

// Header values must not smuggle CR/LF or other controls into the response (RFC 9110 §5.5).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function checkField(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '' || !FIELD_VALUE.test(value)) {
    throw createError('RECGATE_INTERNAL', {
      message: `options.${name} must be a non-empty string without control characters`,
    });
  }
  return value;
}

function validateOptions(options: ServeOptions): ResolvedOptions {
  const { maxRanges } = options;
  if (maxRanges !== undefined && (!Number.isSafeInteger(maxRanges) || maxRanges < 1)) {
    throw createError('RECGATE_INTERNAL', { message: 'options.maxRanges must be a positive integer' });
  }
  return {
    contentType: checkField('contentType', options.contentType) ?? 'application/octet-stream',
    cacheControl: checkField('cacheControl', options.cacheControl),
    contentDisposition: checkField('contentDisposition', options.contentDisposition),
    maxRanges,
  };
}

const CONSULTED = new Set([
  'range',
  'if-range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
]);

function normalizeHeaders(raw: Readonly<Record<string, string | string[] | undefined>>): HeaderValues {
  const out: Record<string, string | undefined> = {};
  // for…in rather than Object.entries: no array of pairs per request.
  for (const name in raw) {
    const value = raw[name];
    if (value === undefined) continue;
    const key = CONSULTED.has(name) ? name : name.toLowerCase();
    if (!CONSULTED.has(key)) continue;
    // Repeated fields combine into one list (RFC 9110 §5.3); for singletons the result is invalid, so ignored.
    const joined = Array.isArray(value) ? value.join(', ') : value;
    out[key] = out[key] === undefined ? joined : `${out[key]}, ${joined}`;
  }
  return out;
}

interface MultipartPlan {
  readonly parts: readonly { readonly range: ByteRange; readonly head: Buffer }[];
  readonly tail: Buffer;
  readonly length: number;
}

/** Lays out a multipart/byteranges body (RFC 9110 §14.6, RFC 2046 §5.1.1): part heads, data, close. */
function planMultipart(
  ranges: readonly ByteRange[],
  size: number,
  contentType: string,
  boundary: string,
): MultipartPlan {
  let length = 0;
  const parts = ranges.map((range, i) => {
    const head = Buffer.from(
      `${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${contentType}\r\n` +
        `Content-Range: ${contentRange(range.start, range.end, size)}\r\n\r\n`,
      'latin1',
    );
    length += head.length + (range.end - range.start + 1);
    return { range, head };
  });
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');
  length += tail.length;
  return { parts, tail, length };
}

/**
 * Streams a multipart body, opening one part's source stream at a time and only when the previous one has
 * ended, so memory stays constant however many ranges there are. Back-pressure pauses the part stream;
 * destroying this stream destroys the part stream in progress.
 */
class MultipartStream extends Readable {
  readonly #source: ByteSource;
  readonly #plan: MultipartPlan;
  #next = 0;
  #part: Readable | undefined;
  #started = false;

  constructor(source: ByteSource, plan: MultipartPlan) {
    super();
    this.#source = source;
    this.#plan = plan;
  }

  override _read(): void {
    if (this.#part !== undefined) {
      this.#part.resume();
      return;
    }
    if (!this.#started) {
      this.#started = true;
      this.#openNext();
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const part = this.#part;
    this.#part = undefined;
    part?.destroy();
    callback(error);
  }

  #openNext(): void {
    if (this.destroyed) return;
    const { parts, tail } = this.#plan;
    if (this.#next === parts.length) {
      this.push(tail);
      this.push(null);
      return;
    }
    const { range, head } = parts[this.#next++]!;
    this.push(head);
    const expected = range.end - range.start + 1;
    let received = 0;
    let part: Readable;
    try {
      part = this.#source.createReadStream(range.start, range.end);
    } catch (error) {
      this.destroy(error as Error);
      return;
    }
    this.#part = part;
    part.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (!this.push(chunk)) part.pause();
    });
    part.once('error', (error) => this.destroy(error));
    part.once('end', () => {
      if (this.#part !== part) return;
      this.#part = undefined;
      if (received !== expected) {
        // A short part would make the declared Content-Length a lie; fail the response instead.
        this.destroy(
          createError('RECGATE_STORAGE_ERROR', {
            cause: new Error(`range ${range.start}-${range.end} delivered ${received} of ${expected} bytes`),
          }),
        );
        return;
      }
      this.#openNext();
    });
  }
}
