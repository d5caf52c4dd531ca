/**
 * {@link Upstream} over Twilio's REST API (or `recgate emulator`), with undici.
 *
 * Every request goes through one retry loop (`retry.ts`): transient failures are retried with backoff and
 * jitter, bounded in attempts and total time. Redirects are followed by hand so that the Basic credentials
 * only ever go to the origin of `baseUrl`, never to the storage host a media URL redirects to. Upstream
 * bodies and credentials never reach a client-visible error message or a log line; details travel in
 * `cause`. Options are checked in the constructor (`options.ts`); Twilio's JSON is read in
 * `twilio-json.ts` and media responses in `media.ts`.
 */
import { Agent, type Dispatcher } from 'undici';
import { createError } from '../errors.js';
import { redactUrl } from '../observability/logger.js';
import type { Variant } from '../recordings/variant.js';
import { type CallSid, parseCallSid, parseRecordingSid, type RecordingSid } from '../sid.js';
import { errorCode, headerValue } from './http-util.js';
import { rangeHeader, toMediaHead, toMediaResponse } from './media.js';
import { type ResolvedOptions, resolveOptions, type TwilioClientOptions } from './options.js';
import {
  type OperationContext,
  parseRetryAfter,
  RetryableFailure,
  statusFailure,
  withRetry,
} from './retry.js';
import {
  type ErrorDetail,
  malformed,
  parseCall,
  parseRecording,
  parseRecordingPage,
  readErrorDetail,
  readJson,
  upstreamStatusError,
} from './twilio-json.js';
import type {
  ListRecordingsOptions,
  MediaHead,
  MediaRequest,
  MediaResponse,
  Upstream,
  UpstreamCall,
  UpstreamRecording,
} from './upstream.js';

export type {
  RequestEvent,
  RetryEvent,
  RetryReason,
  TwilioClientOptions,
  TwilioOperation,
  TwilioRetryPolicy,
} from './options.js';

const API_VERSION = '2010-04-01';
const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Recording states in which the media will never appear. */
const GONE_STATUSES = new Set(['deleted', 'absent', 'failed']);

export class TwilioClient implements Upstream {
  readonly #options: ResolvedOptions;
  readonly #agent: Agent;
  readonly #accountUrl: string;
  #closed = false;

  /** Checks `options` (a TypeError names the first bad field) and prepares a connection pool. */
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

  /** The recording, or `undefined` if the upstream does not know it (404). Not part of {@link Upstream}. */
  async getRecording(
    recordingSid: RecordingSid,
    signal?: AbortSignal,
  ): Promise<UpstreamRecording | undefined> {
    const sid = parseRecordingSid(recordingSid);
    const ctx: OperationContext = { operation: 'getRecording', sid, signal };
    const json = await this.#getJson(ctx, `${this.#accountUrl}/Recordings/${sid}.json`);
    return json === undefined ? undefined : parseRecording(json, undefined);
  }

  /**
   * The account's own resource: its SID and auth token (Twilio shows a subaccount's auth token to its
   * parent). Used to validate a subaccount's webhooks. Not part of {@link Upstream}. Throws as the other
   * methods do; RECGATE_UPSTREAM_AUTH when the account is unknown or out of these credentials' reach.
   */
  async getAccount(signal?: AbortSignal): Promise<{ sid: string; authToken: string | null }> {
    const ctx: OperationContext = { operation: 'getAccount', sid: this.#options.accountSid, signal };
    const json = await this.#getJson(ctx, `${this.#accountUrl}.json`);
    if (json === undefined) {
      throw createError('RECGATE_UPSTREAM_AUTH', {
        cause: new Error(`account ${this.#options.accountSid} answered 404`),
      });
    }
    const { sid, auth_token: authToken } = json as { sid?: unknown; auth_token?: unknown };
    if (typeof sid !== 'string') throw malformed('account resource without a sid');
    return { sid, authToken: typeof authToken === 'string' && authToken !== '' ? authToken : null };
  }

  async listCallRecordings(callSid: CallSid, signal?: AbortSignal): Promise<UpstreamRecording[]> {
    const sid = parseCallSid(callSid);
    const ctx: OperationContext = { operation: 'listCallRecordings', sid, signal };
    return this.#listRecordingPages(ctx, `${this.#accountUrl}/Calls/${sid}/Recordings.json`, sid);
  }

  async listRecordings(options: ListRecordingsOptions = {}): Promise<UpstreamRecording[]> {
    const query = new URLSearchParams();
    for (const [name, value] of [
      ['dateCreatedAfter', options.dateCreatedAfter],
      ['dateCreatedBefore', options.dateCreatedBefore],
    ] as const) {
      if (value === undefined) continue;
      if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
        throw new TypeError(`options.${name} must be a valid Date`);
      }
      query.set(name === 'dateCreatedAfter' ? 'DateCreated>=' : 'DateCreated<=', iso8601(value));
    }
    const ctx: OperationContext = { operation: 'listRecordings', sid: '', signal: options.signal };
    const search = query.size > 0 ? `?${query.toString()}` : '';
    return this.#listRecordingPages(ctx, `${this.#accountUrl}/Recordings.json${search}`, undefined);
  }

  /**
   * Every recording of a paged list, from `first` on, following `next_page_uri`; `[]` when the first page
   * is a 404 (an unknown call).
   */
  async #listRecordingPages(
    ctx: OperationContext,
    first: string,
    callSid: CallSid | undefined,
  ): Promise<UpstreamRecording[]> {
    const recordings: UpstreamRecording[] = [];
    const seen = new Set<string>();
    let url: string | null = first;
    while (url !== null) {
      if (seen.has(url)) throw malformed('next_page_uri points back to a page already read');
      seen.add(url);
      const json = await this.#getJson(ctx, url);
      if (json === undefined) {
        if (seen.size === 1) return [];
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
          cause: new Error(`page ${redactUrl(url)} of a recording list answered 404`),
        });
      }
      const page = parseRecordingPage(json, callSid);
      recordings.push(...page.recordings);
      url = page.nextPageUri === null ? null : new URL(page.nextPageUri, this.#options.baseUrl).href;
    }
    return recordings;
  }

  async fetchMedia(recordingSid: RecordingSid, request: MediaRequest = {}): Promise<MediaResponse> {
    const sid = parseRecordingSid(recordingSid);
    this.#requireAccount(request.account);
    const headers: Record<string, string> = { accept: acceptOf(request.variant) };
    const range = rangeHeader(request);
    if (range !== undefined) {
      headers.range = range;
      if (request.ifRange !== undefined) headers['if-range'] = request.ifRange;
    }
    const ctx: OperationContext = { operation: 'fetchMedia', sid, signal: request.signal };
    const mediaUrl = `${this.#accountUrl}/Recordings/${mediaPath(sid, request.variant)}`;
    const res = await withRetry(ctx, this.#options, async () => {
      const response = await this.#send(ctx, mediaUrl, headers);
      const status = response.statusCode;
      if (status === 200 || status === 206) return response;
      const detail = await readErrorDetail(response.body);
      variantUnavailable('fetchMedia', status, detail, request.variant);
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
    return toMediaResponse(sid, res, request.signal);
  }

  async headMedia(recordingSid: RecordingSid, signal?: AbortSignal, variant?: Variant): Promise<MediaHead> {
    const sid = parseRecordingSid(recordingSid);
    const ctx: OperationContext = { operation: 'headMedia', sid, signal };
    const mediaUrl = `${this.#accountUrl}/Recordings/${mediaPath(sid, variant)}`;
    const res = await withRetry(ctx, this.#options, async () => {
      const response = await this.#send(ctx, mediaUrl, { accept: acceptOf(variant) }, 'HEAD');
      const status = response.statusCode;
      if (status === 200) return response;
      const detail = await readErrorDetail(response.body);
      variantUnavailable('headMedia', status, detail, variant);
      if (status === 404) await this.#checkRecordingStillComing(ctx, sid, detail);
      throw statusFailure('headMedia', status, response.headers, detail);
    });
    return toMediaHead(res);
  }

  /** Waits for requests in flight (and their bodies) to finish, then closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#agent.close();
  }

  /** A request for another account than this client's must not go out under its credentials. */
  #requireAccount(account: string | undefined): void {
    if (account === undefined || account === this.#options.accountSid) return;
    throw createError('RECGATE_UPSTREAM_AUTH', {
      cause: new Error(`a client of account ${this.#options.accountSid} was asked for account ${account}`),
    });
  }

  /** GETs a JSON document with retries; `undefined` on 404. */
  async #getJson(ctx: OperationContext, url: string): Promise<unknown> {
    return withRetry(ctx, this.#options, async () => {
      const response = await this.#send(ctx, url, { accept: 'application/json' });
      const status = response.statusCode;
      if (status === 200) return readJson(response.body);
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
      const recording = parseRecording(await readJson(response.body), undefined);
      if (GONE_STATUSES.has(recording.status)) {
        throw createError('RECGATE_RECORDING_GONE', {
          cause: new Error(`media of ${sid} answered 404 and its metadata has status ${recording.status}`),
        });
      }
      throw notReady(
        upstreamStatusError('fetchMedia', 404, mediaDetail, `recording status ${recording.status}`),
      );
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
    throw notReady(upstreamStatusError('getRecording', status, detail, 'metadata check after a media 404'));
  }

  /** Sends one GET, following up to {@link MAX_REDIRECTS} redirects; credentials only to the base origin. */
  async #send(
    ctx: OperationContext,
    url: string,
    extraHeaders: Record<string, string>,
    method: 'GET' | 'HEAD' = 'GET',
  ): Promise<Dispatcher.ResponseData> {
    if (this.#closed)
      throw createError('RECGATE_SHUTTING_DOWN', { cause: new Error('TwilioClient is closed') });
    let current = new URL(url);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...extraHeaders, 'user-agent': 'recgate' };
      if (current.origin === this.#options.baseUrl.origin)
        headers.authorization = this.#options.authorization;
      const response = await this.#exchange(ctx, current, headers, method);
      if (!REDIRECT_STATUSES.has(response.statusCode)) return response;

      await readErrorDetail(response.body);
      const next = redirectTarget(ctx, response, current, hop);
      this.#options.logger?.debug(
        { operation: ctx.operation, sid: ctx.sid, from: safeUrl(current), to: safeUrl(next) },
        'Following upstream redirect',
      );
      current = next;
    }
  }

  /**
   * One HTTP exchange, reported whether it answered or failed. Nothing goes out while the breaker is open,
   * and a 429 opens it.
   */
  async #exchange(
    ctx: OperationContext,
    url: URL,
    headers: Record<string, string>,
    method: 'GET' | 'HEAD',
  ): Promise<Dispatcher.ResponseData> {
    this.#options.breaker.check();
    const started = performance.now();
    let response: Dispatcher.ResponseData;
    try {
      response = await this.#agent.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method,
        headers,
        signal: ctx.signal,
      });
    } catch (err) {
      this.#report(ctx, url, null, errorCode(err), started);
      throw err;
    }
    this.#report(ctx, url, response.statusCode, null, started);
    if (response.statusCode === 429) {
      this.#options.breaker.trip(parseRetryAfter(headerValue(response.headers['retry-after'])));
    }
    return response;
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
}

/**
 * The media resource of a variant: `{sid}.mp3` or `{sid}.wav`, with `RequestedChannels=2` for the
 * dual-channel file (Twilio: a media URL without extension is WAV too; recgate always names the format).
 */
function mediaPath(sid: RecordingSid, variant: Variant | undefined): string {
  const file = `${sid}.${variant?.format === 'wav' ? 'wav' : 'mp3'}`;
  return variant?.channels === 2 ? `${file}?RequestedChannels=2` : file;
}

function acceptOf(variant: Variant | undefined): string {
  return variant?.format === 'wav' ? 'audio/wav, audio/x-wav' : 'audio/mpeg';
}

/**
 * Twilio's answer to a mono recording asked for as dual-channel: 400 with code 16113 ("Cannot download a
 * dual-channel presentation of a mono recording"). A HEAD's 400 has no body to carry the code; for a
 * dual-channel request it means the same. Throws RECGATE_VARIANT_UNAVAILABLE (not retried).
 */
function variantUnavailable(
  operation: 'fetchMedia' | 'headMedia',
  status: number,
  detail: ErrorDetail,
  variant: Variant | undefined,
): void {
  if (status !== 400 || variant?.channels !== 2) return;
  if (detail.twilioCode !== TWILIO_MONO_RECORDING && detail.twilioCode !== null) return;
  throw createError('RECGATE_VARIANT_UNAVAILABLE', { cause: upstreamStatusError(operation, status, detail) });
}

/** Twilio's warning 16113: a mono recording cannot be downloaded as dual-channel. */
const TWILIO_MONO_RECORDING = 16113;

/** A media 404 to retry: the recording is still on its way. */
function notReady(cause: Error): RetryableFailure {
  return new RetryableFailure({ reason: 'not_ready', status: 404, retryAfterMs: null, cause });
}

/** Where redirect number `hop` (0-based) leads; throws RECGATE_UPSTREAM_UNAVAILABLE for one not to follow. */
function redirectTarget(
  ctx: OperationContext,
  response: Dispatcher.ResponseData,
  current: URL,
  hop: number,
): URL {
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
  return next;
}

/** Origin and path only: signed storage URLs carry their credentials in the query. */
function safeUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** Twilio's date-time filters take ISO 8601 in UTC, to the second. */
function iso8601(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
