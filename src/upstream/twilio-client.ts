/**
 * {@link Upstream} over Twilio's REST API (or `recgate emulator`), with undici.
 *
 * Every request goes through one retry loop: transient failures (not-ready 404s on media, 429, 5xx, broken
 * connections, headers timeouts) are retried with exponential backoff and full jitter, bounded both by
 * `retry.maxAttempts` and by `retry.maxTotalMs`. Redirects are followed by hand so that the Basic
 * credentials only ever go to the origin of `baseUrl`, never to the storage host a media URL redirects to.
 * Upstream bodies and credentials never reach a client-visible error message or a log line; details travel
 * in `cause`.
 */
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Agent, type Dispatcher } from 'undici';
import { createError, isRecgateError, type RecgateError } from '../errors.js';
import { redactUrl } from '../observability/logger.js';
import { type CallSid, isAccountSid, parseCallSid, parseRecordingSid, type RecordingSid } from '../sid.js';
import type { MediaRequest, MediaResponse, Upstream, UpstreamCall, UpstreamRecording } from './upstream.js';

export interface TwilioRetryPolicy {
  /** Requests per operation, the first one included. @default 6 */
  maxAttempts?: number;
  /** Backoff before the first retry; doubles each retry, with full jitter. @default 200 */
  baseDelayMs?: number;
  /** Upper bound of one backoff, including a server's `Retry-After`. @default 5000 */
  maxDelayMs?: number;
  /** No retry starts later than this after the operation began; backoffs are shortened to fit. @default 30000 */
  maxTotalMs?: number;
}

export type TwilioOperation = 'getCall' | 'getRecording' | 'listCallRecordings' | 'fetchMedia';

/** Why an attempt failed in a way worth retrying. */
export type RetryReason = 'not_ready' | 'rate_limited' | 'server_error' | 'network' | 'timeout';

export interface RetryEvent {
  operation: TwilioOperation;
  /** The call or recording SID the operation is about. */
  sid: string;
  /** The attempt that just failed, 1-based. */
  attempt: number;
  reason: RetryReason;
  /** HTTP status of the failed attempt, `null` for connection errors and timeouts. */
  status: number | null;
  /** How long the client waits before the next attempt. */
  delayMs: number;
}

export interface RequestEvent {
  operation: TwilioOperation;
  /** Host the request went to (Twilio, or the storage host of a redirect). */
  host: string;
  /** Response status, or `null` when no response arrived. */
  status: number | null;
  /** Error code (`ECONNRESET`, `UND_ERR_HEADERS_TIMEOUT`, …) when no response arrived. */
  errorCode: string | null;
  /** Time until the response headers (or the error). */
  durationMs: number;
}

export interface TwilioClientOptions {
  /** Twilio REST base URL, or the emulator's. @default 'https://api.twilio.com' */
  baseUrl?: string;
  /** Account whose resources are read (`AC` + 32 hex digits). Required. */
  accountSid: string;
  /** Account auth token; Basic auth as `accountSid:authToken`. Give this or `apiKey` + `apiSecret`. */
  authToken?: string;
  /** API key SID (`SK…`); Basic auth as `apiKey:apiSecret`. */
  apiKey?: string;
  /** Secret of `apiKey`. */
  apiSecret?: string;
  /** Time allowed to open a TCP/TLS connection. @default 5000 */
  connectTimeoutMs?: number;
  /** Time allowed from sending a request to receiving its response headers. @default 15000 */
  headersTimeoutMs?: number;
  /** Longest silence allowed while a body streams; a longer stall errors the body. @default 30000 */
  bodyIdleTimeoutMs?: number;
  /** Retry policy; each field has its own default. */
  retry?: TwilioRetryPolicy;
  /** Receives request lines at debug and retries at warn. Credentials are never logged. @default none */
  logger?: Logger;
  /** Called before each backoff sleep (for metrics or tests). Exceptions it throws are ignored. @default none */
  onRetry?: (event: RetryEvent) => void;
  /** Called once per HTTP exchange, redirects included (for metrics). Exceptions are ignored. @default none */
  onRequest?: (event: RequestEvent) => void;
}

const DEFAULT_BASE_URL = 'https://api.twilio.com';
const API_VERSION = '2010-04-01';
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Twilio's JSON documents are small; this only protects memory from a misbehaving server. */
const MAX_JSON_BYTES = 8 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 4096;
/** Recording states in which the media will never appear. */
const GONE_STATUSES = new Set(['deleted', 'absent', 'failed']);
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
const NETWORK_CODES = new Set([
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
]);

interface ResolvedOptions {
  baseUrl: URL;
  accountSid: string;
  authorization: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyIdleTimeoutMs: number;
  retry: Required<TwilioRetryPolicy>;
  logger: Logger | undefined;
  onRetry: ((event: RetryEvent) => void) | undefined;
  onRequest: ((event: RequestEvent) => void) | undefined;
}

interface Failure {
  reason: RetryReason;
  status: number | null;
  retryAfterMs: number | null;
  cause: unknown;
}

/** Thrown inside an attempt to ask the retry loop for another try. Never escapes the client. */
class RetryableFailure extends Error {
  readonly failure: Failure;
  constructor(failure: Failure) {
    super(`retryable upstream failure: ${failure.reason}`);
    this.failure = failure;
  }
}

interface OperationContext {
  operation: TwilioOperation;
  sid: string;
  signal: AbortSignal | undefined;
}

export class TwilioClient implements Upstream {
  readonly #options: ResolvedOptions;
  readonly #agent: Agent;
  readonly #accountUrl: string;
  #closed = false;

  constructor(options: TwilioClientOptions) {
    this.#options = resolveOptions(options);
    const base = this.#options.baseUrl;
    this.#accountUrl = `${base.origin}${base.pathname.replace(/\/+$/, '')}/${API_VERSION}/Accounts/${this.#options.accountSid}`;
    this.#agent = new Agent({
      connect: { timeout: this.#options.connectTimeoutMs },
      headersTimeout: this.#options.headersTimeoutMs,
      bodyTimeout: this.#options.bodyIdleTimeoutMs,
    });
  }

  async getCall(callSid: CallSid, signal?: AbortSignal): Promise<UpstreamCall | undefined> {
    const sid = parseCallSid(callSid);
    const ctx: OperationContext = { operation: 'getCall', sid, signal };
    const json = await this.#getJson(ctx, `${this.#accountUrl}/Calls/${sid}.json`);
    return json === undefined ? undefined : parseCall(json);
  }

  async getRecording(
    recordingSid: RecordingSid,
    signal?: AbortSignal,
  ): Promise<UpstreamRecording | undefined> {
    const sid = parseRecordingSid(recordingSid);
    const ctx: OperationContext = { operation: 'getRecording', sid, signal };
    const json = await this.#getJson(ctx, `${this.#accountUrl}/Recordings/${sid}.json`);
    return json === undefined ? undefined : parseRecording(json, undefined);
  }

  async listCallRecordings(callSid: CallSid, signal?: AbortSignal): Promise<UpstreamRecording[]> {
    const sid = parseCallSid(callSid);
    const ctx: OperationContext = { operation: 'listCallRecordings', sid, signal };
    const recordings: UpstreamRecording[] = [];
    const seen = new Set<string>();
    let url: string | null = `${this.#accountUrl}/Calls/${sid}/Recordings.json`;
    while (url !== null) {
      if (seen.has(url)) throw malformed('next_page_uri points back to a page already read');
      seen.add(url);
      const page = await this.#getJson(ctx, url);
      if (page === undefined) {
        if (seen.size === 1) return [];
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(`page ${redactUrl(url)} of a recording list answered 404`),
        });
      }
      const items = (page as { recordings?: unknown }).recordings;
      if (!Array.isArray(items)) throw malformed('recording list without a recordings array');
      for (const item of items) recordings.push(parseRecording(item, sid));
      const next = (page as { next_page_uri?: unknown }).next_page_uri;
      url = typeof next === 'string' && next !== '' ? new URL(next, this.#options.baseUrl).href : null;
    }
    return recordings;
  }

  async fetchMedia(recordingSid: RecordingSid, request: MediaRequest = {}): Promise<MediaResponse> {
    const sid = parseRecordingSid(recordingSid);
    const { signal } = request;
    const headers: Record<string, string> = { accept: 'audio/mpeg' };
    const range = rangeHeader(request);
    if (range !== undefined) {
      headers.range = range;
      if (request.ifRange !== undefined) headers['if-range'] = request.ifRange;
    }
    const ctx: OperationContext = { operation: 'fetchMedia', sid, signal };
    const mediaUrl = `${this.#accountUrl}/Recordings/${sid}.mp3`;
    const res = await this.#withRetry(ctx, async () => {
      const response = await this.#send(ctx, mediaUrl, headers);
      const status = response.statusCode;
      if (status === 200 || status === 206) return response;
      const detail = await readErrorDetail(response.body);
      if (status === 404) {
        // Right after a recording completes Twilio answers 404 for a while; only the metadata tells a
        // recording that is still coming from one that is gone.
        await this.#checkRecordingStillComing(ctx, sid, detail);
      }
      if (status === 416) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: upstreamStatusError('fetchMedia', status, detail, response.headers['content-range']),
        });
      }
      throw statusFailure('fetchMedia', status, response.headers, detail);
    });
    return this.#toMediaResponse(ctx, res);
  }

  /** Waits for requests in flight (and their bodies) to finish, then closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#agent.close();
  }

  /** GETs a JSON document with retries; `undefined` on 404. */
  async #getJson(ctx: OperationContext, url: string): Promise<unknown> {
    return this.#withRetry(ctx, async () => {
      const response = await this.#send(ctx, url, { accept: 'application/json' });
      const status = response.statusCode;
      if (status === 200) return parseJson(await readLimited(response.body, MAX_JSON_BYTES, true));
      const detail = await readErrorDetail(response.body);
      if (status === 404) return undefined;
      throw statusFailure(ctx.operation, status, response.headers, detail);
    });
  }

  /**
   * One metadata look-up after a media 404. Throws RECGATE_RECORDING_GONE when the recording is gone,
   * otherwise a not-ready failure so that the media request is retried.
   */
  async #checkRecordingStillComing(
    ctx: OperationContext,
    sid: RecordingSid,
    mediaDetail: ErrorDetail,
  ): Promise<never> {
    const response = await this.#send(ctx, `${this.#accountUrl}/Recordings/${sid}.json`, {
      accept: 'application/json',
    });
    const status = response.statusCode;
    if (status === 200) {
      const recording = parseRecording(
        parseJson(await readLimited(response.body, MAX_JSON_BYTES, true)),
        undefined,
      );
      if (GONE_STATUSES.has(recording.status)) {
        throw createError('RECGATE_RECORDING_GONE', {
          cause: new Error(`media of ${sid} answered 404 and its metadata has status ${recording.status}`),
        });
      }
      throw new RetryableFailure({
        reason: 'not_ready',
        status: 404,
        retryAfterMs: null,
        cause: upstreamStatusError('fetchMedia', 404, mediaDetail, `recording status ${recording.status}`),
      });
    }
    const detail = await readErrorDetail(response.body);
    if (status === 404) {
      throw createError('RECGATE_RECORDING_GONE', {
        cause: upstreamStatusError('getRecording', status, detail, 'after a media 404'),
      });
    }
    if (status === 401 || status === 403)
      throw statusFailure('getRecording', status, response.headers, detail);
    // The metadata is momentarily unavailable too; the media 404 is then treated as transient.
    throw new RetryableFailure({
      reason: 'not_ready',
      status: 404,
      retryAfterMs: null,
      cause: upstreamStatusError('getRecording', status, detail, 'metadata check after a media 404'),
    });
  }

  /** Sends one GET, following up to {@link MAX_REDIRECTS} redirects; credentials only to the base origin. */
  async #send(
    ctx: OperationContext,
    url: string,
    extraHeaders: Record<string, string>,
  ): Promise<Dispatcher.ResponseData> {
    if (this.#closed)
      throw createError('RECGATE_SHUTTING_DOWN', { cause: new Error('TwilioClient is closed') });
    let current = new URL(url);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...extraHeaders, 'user-agent': 'recgate' };
      if (current.origin === this.#options.baseUrl.origin)
        headers.authorization = this.#options.authorization;
      const started = performance.now();
      let response: Dispatcher.ResponseData;
      try {
        response = await this.#agent.request({
          origin: current.origin,
          path: `${current.pathname}${current.search}`,
          method: 'GET',
          headers,
          signal: ctx.signal,
        });
      } catch (err) {
        this.#report(ctx, current, null, errorCode(err), started);
        throw err;
      }
      this.#report(ctx, current, response.statusCode, null, started);
      if (!REDIRECT_STATUSES.has(response.statusCode)) return response;

      await readErrorDetail(response.body);
      const location = headerValue(response.headers.location);
      if (location === null) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(`${ctx.operation}: ${response.statusCode} redirect without a Location header`),
        });
      }
      if (hop >= MAX_REDIRECTS) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(`${ctx.operation}: more than ${MAX_REDIRECTS} redirects`),
        });
      }
      let next: URL;
      try {
        next = new URL(location, current);
      } catch (err) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: err });
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(`${ctx.operation}: redirect to a non-http(s) URL (${next.protocol})`),
        });
      }
      this.#options.logger?.debug(
        { operation: ctx.operation, sid: ctx.sid, from: safeUrl(current), to: safeUrl(next) },
        'Following upstream redirect',
      );
      current = next;
    }
  }

  #report(
    ctx: OperationContext,
    url: URL,
    status: number | null,
    code: string | null,
    started: number,
  ): void {
    const durationMs = Math.round(performance.now() - started);
    this.#options.logger?.debug(
      { operation: ctx.operation, sid: ctx.sid, url: safeUrl(url), status, errorCode: code, durationMs },
      'Upstream request',
    );
    const hook = this.#options.onRequest;
    if (hook === undefined) return;
    try {
      hook({ operation: ctx.operation, host: url.host, status, errorCode: code, durationMs });
    } catch (err) {
      this.#options.logger?.warn({ err }, 'onRequest hook threw; ignored');
    }
  }

  /** Runs `attempt` until it succeeds, fails terminally, or the retry budget runs out. */
  async #withRetry<T>(ctx: OperationContext, attempt: () => Promise<T>): Promise<T> {
    const { retry, logger } = this.#options;
    const started = Date.now();
    for (let n = 1; ; n++) {
      if (ctx.signal?.aborted) throw abortError(ctx.signal);
      let failure: Failure;
      try {
        return await attempt();
      } catch (err) {
        if (ctx.signal?.aborted) throw abortError(ctx.signal);
        if (err instanceof RetryableFailure) failure = err.failure;
        else {
          const classified = classifyError(err);
          if (classified === null)
            throw isRecgateError(err) ? err : createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: err });
          failure = classified;
        }
      }

      const elapsed = Date.now() - started;
      const remaining = retry.maxTotalMs - elapsed;
      if (n >= retry.maxAttempts || remaining <= 0) {
        logger?.warn(
          {
            operation: ctx.operation,
            sid: ctx.sid,
            attempts: n,
            elapsedMs: elapsed,
            status: failure.status,
            reason: failure.reason,
          },
          'Upstream retries exhausted',
        );
        throw exhausted(ctx, failure, n, elapsed);
      }
      const backoff = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (n - 1));
      const wanted = failure.retryAfterMs ?? Math.floor(Math.random() * (backoff + 1));
      const delayMs = Math.min(wanted, retry.maxDelayMs, remaining);
      logger?.warn(
        {
          operation: ctx.operation,
          sid: ctx.sid,
          attempt: n,
          status: failure.status,
          reason: failure.reason,
          delayMs,
          err: failure.cause,
        },
        'Upstream request failed; retrying',
      );
      if (this.#options.onRetry !== undefined) {
        try {
          this.#options.onRetry({
            operation: ctx.operation,
            sid: ctx.sid,
            attempt: n,
            reason: failure.reason,
            status: failure.status,
            delayMs,
          });
        } catch (err) {
          logger?.warn({ err }, 'onRetry hook threw; ignored');
        }
      }
      try {
        await sleep(delayMs, undefined, ctx.signal === undefined ? undefined : { signal: ctx.signal });
      } catch (err) {
        if (ctx.signal?.aborted) throw abortError(ctx.signal);
        throw err;
      }
    }
  }

  #toMediaResponse(ctx: OperationContext, res: Dispatcher.ResponseData): MediaResponse {
    const contentLength = parseNonNegativeInt(headerValue(res.headers['content-length']));
    let status: 200 | 206 = 200;
    let start = 0;
    let totalSize = contentLength;
    if (res.statusCode === 206) {
      const contentRange = headerValue(res.headers['content-range']);
      const match = contentRange === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange.trim());
      if (match === null) {
        discard(res.body);
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(
            `fetchMedia ${ctx.sid}: 206 with unusable Content-Range ${JSON.stringify(contentRange)}`,
          ),
        });
      }
      status = 206;
      start = Number(match[1]);
      totalSize = match[3] === '*' ? null : Number(match[3]);
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
      body: guardBody(res.body, contentLength, ctx, endsWithConnection(res.headers, contentLength)),
    };
  }
}

/** Creates a {@link TwilioClient}; the options are validated here. */
export function createTwilioClient(options: TwilioClientOptions): TwilioClient {
  return new TwilioClient(options);
}

/**
 * Whether the connection ends with this response: `Connection: close`, or a body delimited by the close
 * (neither Content-Length nor chunked). Such a body must be read without backpressure (see {@link guardBody}).
 */
function endsWithConnection(
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
 * With `eager`, the body is read as fast as it arrives, whatever the reader's pace (the bytes wait in
 * this stream instead), so undici's parser never pauses for backpressure. undici 7 crashes the process
 * with an uncatchable `assert(!this.paused)` when a connection that ends with its response (see
 * {@link endsWithConnection}) sends its FIN while the parser is paused (nodejs/undici#5360, fixed only
 * in undici 8, which needs Node 22). The cost: such a body can sit in memory up to its size while the
 * disk is slower than the network.
 */
function guardBody(
  source: Readable,
  expected: number | null,
  ctx: OperationContext,
  eager: boolean,
): Readable {
  let received = 0;
  const out = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      received += chunk.length;
      if (expected !== null && received > expected) {
        callback(
          bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `received more than the ${expected} bytes announced`),
        );
        return;
      }
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      if (expected !== null && received < expected) {
        callback(bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `ended after ${received} of ${expected} bytes`));
        return;
      }
      callback();
    },
  });
  source.on('error', (err: unknown) => {
    if (ctx.signal?.aborted) {
      out.destroy(abortError(ctx.signal));
      return;
    }
    const code = errorCode(err);
    if (code === 'UND_ERR_BODY_TIMEOUT') {
      out.destroy(bodyError('RECGATE_UPSTREAM_TIMEOUT', `stalled after ${received} bytes`, err));
    } else if (
      code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' ||
      (code === 'UND_ERR_SOCKET' && /other side closed/.test((err as Error).message))
    ) {
      // A clean close (FIN) before Content-Length bytes: undici reports it in one of these two ways.
      out.destroy(
        bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `ended after ${received} of ${expected ?? '?'} bytes`, err),
      );
    } else {
      out.destroy(bodyError('RECGATE_UPSTREAM_UNAVAILABLE', `broke after ${received} bytes`, err));
    }
  });
  out.on('close', () => {
    if (!source.destroyed) source.destroy();
  });
  // The caller may still be opening its file when the connection breaks: an error emitted before anyone
  // listens must not crash the process. The stream stays errored, so a later reader gets the error at once.
  out.on('error', () => {});
  if (eager) {
    source.on('data', (chunk: Buffer) => {
      if (!out.destroyed) out.write(chunk);
    });
    source.on('end', () => {
      if (!out.destroyed) out.end();
    });
  } else {
    source.pipe(out);
  }
  return out;
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

function rangeHeader(request: MediaRequest): string | undefined {
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

interface ErrorDetail {
  /** Twilio's numeric error code (20404 for "not found"), when the body was Twilio JSON. */
  twilioCode: number | null;
  /** Start of the body, for logs only. */
  snippet: string;
}

/** Reads (and bounds) an error body for the logs; never fails. */
async function readErrorDetail(body: Readable): Promise<ErrorDetail> {
  let snippet = '';
  try {
    snippet = await readLimited(body, MAX_ERROR_BODY_BYTES, false);
  } catch {
    return { twilioCode: null, snippet: '' };
  }
  let twilioCode: number | null = null;
  try {
    const code = (JSON.parse(snippet) as { code?: unknown }).code;
    if (typeof code === 'number') twilioCode = code;
  } catch {
    // Not JSON (a proxy's HTML page, a truncated body): the snippet alone goes to the logs.
  }
  return { twilioCode, snippet };
}

/** Reads a body as UTF-8 up to `limit` bytes; beyond that it throws (`strict`) or truncates. */
async function readLimited(body: Readable, limit: number, strict: boolean): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) {
      discard(body);
      if (strict) throw malformed(`response body larger than ${limit} bytes`);
      chunks.push(buf.subarray(0, buf.length - (size - limit)));
      break;
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Drops a body we will not read; undici reports the destroy as an error nobody needs to see. */
function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
      cause: new Error('upstream answered invalid JSON', { cause: err }),
    });
  }
}

function malformed(what: string): RecgateError {
  return createError('RECGATE_UPSTREAM_UNAVAILABLE', {
    cause: new Error(`malformed upstream response: ${what}`),
  });
}

function parseCall(json: unknown): UpstreamCall {
  if (typeof json !== 'object' || json === null) throw malformed('call is not an object');
  const o = json as Record<string, unknown>;
  const sid = o.sid;
  if (typeof sid !== 'string') throw malformed('call without a sid');
  const parent = o.parent_call_sid;
  return {
    sid: parseUpstreamCallSid(sid),
    parentCallSid: typeof parent === 'string' && parent !== '' ? parseUpstreamCallSid(parent) : null,
    direction: stringOrNull(o.direction),
    from: stringOrNull(o.from),
    to: stringOrNull(o.to),
    startTime: stringOrNull(o.start_time),
    durationS: durationOrNull(o.duration),
    status: stringOrNull(o.status),
  };
}

function parseRecording(json: unknown, fallbackCallSid: CallSid | undefined): UpstreamRecording {
  if (typeof json !== 'object' || json === null) throw malformed('recording is not an object');
  const o = json as Record<string, unknown>;
  let sid: RecordingSid;
  try {
    sid = parseRecordingSid(o.sid);
  } catch {
    throw malformed('recording without a valid sid');
  }
  const callSid = typeof o.call_sid === 'string' ? parseUpstreamCallSid(o.call_sid) : fallbackCallSid;
  if (callSid === undefined) throw malformed(`recording ${sid} without a call_sid`);
  if (typeof o.status !== 'string') throw malformed(`recording ${sid} without a status`);
  return {
    sid,
    callSid,
    status: o.status,
    durationS: durationOrNull(o.duration),
    dateCreated: stringOrNull(o.date_created),
  };
}

function parseUpstreamCallSid(value: string): CallSid {
  try {
    return parseCallSid(value);
  } catch {
    throw malformed('invalid call SID');
  }
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** Twilio sends durations as strings ("42"), and "-1" or null while a recording is in progress. */
function durationOrNull(value: unknown): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && value.trim() !== ''
        ? Number(value)
        : Number.NaN;
  return Number.isFinite(n) && n >= 0 ? n : null;
}

/** Maps a non-success status to a terminal RecgateError or a RetryableFailure (thrown by the caller). */
function statusFailure(
  operation: TwilioOperation,
  status: number,
  headers: Dispatcher.ResponseData['headers'],
  detail: ErrorDetail,
): Error {
  const cause = upstreamStatusError(operation, status, detail);
  if (status === 401 || status === 403) return createError('RECGATE_UPSTREAM_AUTH', { cause });
  if (status === 429 || status >= 500) {
    return new RetryableFailure({
      reason: status === 429 ? 'rate_limited' : 'server_error',
      status,
      retryAfterMs: parseRetryAfter(headerValue(headers['retry-after'])),
      cause,
    });
  }
  return createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause });
}

function upstreamStatusError(operation: string, status: number, detail: ErrorDetail, note?: unknown): Error {
  const err = new Error(
    `${operation}: upstream answered ${status}` +
      (detail.twilioCode === null ? '' : ` (Twilio code ${detail.twilioCode})`) +
      (note === undefined ? '' : ` [${String(note)}]`),
  );
  Object.assign(err, { status, twilioCode: detail.twilioCode, body: detail.snippet });
  return err;
}

/** `Retry-After` as delay-seconds or an HTTP-date; `null` when absent or unusable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

function classifyError(err: unknown): Failure | null {
  const code = errorCode(err);
  if (code === null) return null;
  if (TIMEOUT_CODES.has(code)) return { reason: 'timeout', status: null, retryAfterMs: null, cause: err };
  if (NETWORK_CODES.has(code)) return { reason: 'network', status: null, retryAfterMs: null, cause: err };
  return null;
}

function errorCode(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  const causeCode = ((err as { cause?: { code?: unknown } } | null)?.cause as { code?: unknown } | undefined)
    ?.code;
  return typeof causeCode === 'string' ? causeCode : null;
}

function exhausted(
  ctx: OperationContext,
  failure: Failure,
  attempts: number,
  elapsedMs: number,
): RecgateError {
  const code =
    failure.reason === 'not_ready'
      ? 'RECGATE_RECORDING_NOT_READY'
      : failure.reason === 'timeout'
        ? 'RECGATE_UPSTREAM_TIMEOUT'
        : 'RECGATE_UPSTREAM_UNAVAILABLE';
  const cause = new Error(
    `${ctx.operation} ${ctx.sid}: gave up after ${attempts} attempt(s) in ${elapsedMs} ms; ` +
      `last failure ${failure.reason}${failure.status === null ? '' : ` (status ${failure.status})`}`,
    { cause: failure.cause },
  );
  Object.assign(cause, { attempts, elapsedMs, reason: failure.reason, status: failure.status });
  return createError(code, { cause });
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  Object.assign(err, { code: 'ABORT_ERR' });
  return err;
}

function headerValue(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

function parseNonNegativeInt(value: string | null): number | null {
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : null;
}

function isNonNegativeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Origin and path only: signed storage URLs carry their credentials in the query. */
function safeUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function resolveOptions(options: TwilioClientOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');

  const rawBase = options.baseUrl ?? DEFAULT_BASE_URL;
  let baseUrl: URL;
  try {
    baseUrl = new URL(rawBase);
  } catch {
    throw new TypeError('options.baseUrl must be an http(s) URL');
  }
  if (
    (baseUrl.protocol !== 'http:' && baseUrl.protocol !== 'https:') ||
    baseUrl.username ||
    baseUrl.password
  ) {
    throw new TypeError('options.baseUrl must be an http(s) URL');
  }
  if (baseUrl.search || baseUrl.hash)
    throw new TypeError('options.baseUrl must not have a query or fragment');

  if (!isAccountSid(options.accountSid))
    throw new TypeError('options.accountSid must match ^AC[0-9a-f]{32}$');

  const { authToken, apiKey, apiSecret } = options;
  let username: string;
  let password: string;
  if (authToken !== undefined) {
    if (apiKey !== undefined || apiSecret !== undefined) {
      throw new TypeError('options.authToken and options.apiKey/options.apiSecret are mutually exclusive');
    }
    if (typeof authToken !== 'string' || authToken === '') {
      throw new TypeError('options.authToken must be a non-empty string');
    }
    username = options.accountSid;
    password = authToken;
  } else if (apiKey !== undefined || apiSecret !== undefined) {
    if (typeof apiKey !== 'string' || apiKey === '' || apiKey.includes(':')) {
      throw new TypeError('options.apiKey must be a non-empty string without ":"');
    }
    if (typeof apiSecret !== 'string' || apiSecret === '') {
      throw new TypeError('options.apiSecret must be a non-empty string');
    }
    username = apiKey;
    password = apiSecret;
  } else {
    throw new TypeError('options.authToken, or options.apiKey with options.apiSecret, is required');
  }

  const retry = options.retry ?? {};
  if (typeof retry !== 'object' || retry === null) throw new TypeError('options.retry must be an object');

  for (const hook of ['onRetry', 'onRequest'] as const) {
    if (options[hook] !== undefined && typeof options[hook] !== 'function') {
      throw new TypeError(`options.${hook} must be a function`);
    }
  }
  const logger = options.logger;
  if (logger !== undefined && (typeof logger.warn !== 'function' || typeof logger.child !== 'function')) {
    throw new TypeError('options.logger must be a pino logger');
  }

  return {
    baseUrl,
    accountSid: options.accountSid,
    authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`,
    connectTimeoutMs: positiveInt('options.connectTimeoutMs', options.connectTimeoutMs, 5000),
    headersTimeoutMs: positiveInt('options.headersTimeoutMs', options.headersTimeoutMs, 15_000),
    bodyIdleTimeoutMs: positiveInt('options.bodyIdleTimeoutMs', options.bodyIdleTimeoutMs, 30_000),
    retry: {
      maxAttempts: positiveInt('options.retry.maxAttempts', retry.maxAttempts, 6),
      baseDelayMs: nonNegativeInt('options.retry.baseDelayMs', retry.baseDelayMs, 200),
      maxDelayMs: nonNegativeInt('options.retry.maxDelayMs', retry.maxDelayMs, 5000),
      maxTotalMs: nonNegativeInt('options.retry.maxTotalMs', retry.maxTotalMs, 30_000),
    },
    logger: logger?.child({ component: 'twilio-client' }),
    onRetry: options.onRetry,
    onRequest: options.onRequest,
  };
}

function positiveInt(field: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (!isNonNegativeInt(value) || value === 0) throw new TypeError(`${field} must be a positive integer`);
  return value;
}

function nonNegativeInt(field: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (!isNonNegativeInt(value)) throw new TypeError(`${field} must be a non-negative integer`);
  return value;
}
