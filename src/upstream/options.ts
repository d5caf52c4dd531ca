/**
 * What a caller configures on a {@link TwilioClient} and what its hooks receive. Every field is validated
 * by {@link resolveOptions}, in the constructor, and a bad one is named in the TypeError.
 */
import type { Logger } from 'pino';
import { isAccountSid } from '../sid.js';
import { UpstreamBreaker } from './breaker.js';

export interface TwilioRetryPolicy {
  /** Requests per operation, the first one included. @default 6 */
  maxAttempts?: number;
  /** Backoff before the first retry; doubles each retry, with full jitter. @default 200 */
  baseDelayMs?: number;
  /**
   * Upper bound of one backoff. A server's `Retry-After` is never shortened: one longer than this (or than
   * what is left of `maxTotalMs`) ends the operation with RECGATE_UPSTREAM_THROTTLED instead. @default 5000
   */
  maxDelayMs?: number;
  /** No retry starts later than this after the operation began; backoffs are shortened to fit. @default 30000 */
  maxTotalMs?: number;
}

export type TwilioOperation =
  | 'getCall'
  | 'getRecording'
  | 'listCallRecordings'
  | 'listRecordings'
  | 'fetchMedia'
  | 'headMedia'
  | 'getAccount';

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
  /**
   * The account's circuit breaker: a 429 opens it for the `Retry-After`, and no request goes out while it is
   * open. Pass the one the rest of the process reads for this account (the recording cache fails cold
   * requests fast with it; see `AccountDirectory.breakerFor`). @default a breaker of this client's own
   */
  breaker?: UpstreamBreaker;
}

/** {@link TwilioClientOptions} checked, with every default filled in and the credentials encoded. */
export interface ResolvedOptions {
  baseUrl: URL;
  accountSid: string;
  /** The whole `Authorization` header value. */
  authorization: string;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyIdleTimeoutMs: number;
  retry: Required<TwilioRetryPolicy>;
  logger: Logger | undefined;
  onRetry: ((event: RetryEvent) => void) | undefined;
  onRequest: ((event: RequestEvent) => void) | undefined;
  breaker: UpstreamBreaker;
}

const DEFAULT_BASE_URL = 'https://api.twilio.com';

/** Checks `options` and fills in the defaults; throws a TypeError naming the first bad field. */
export function resolveOptions(options: TwilioClientOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const baseUrl = resolveBaseUrl(options.baseUrl ?? DEFAULT_BASE_URL);
  if (!isAccountSid(options.accountSid))
    throw new TypeError('options.accountSid must match ^AC[0-9a-f]{32}$');
  const authorization = resolveAuthorization(options);
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
    authorization,
    connectTimeoutMs: positiveInt('options.connectTimeoutMs', options.connectTimeoutMs, 5000),
    headersTimeoutMs: positiveInt('options.headersTimeoutMs', options.headersTimeoutMs, 15_000),
    bodyIdleTimeoutMs: positiveInt('options.bodyIdleTimeoutMs', options.bodyIdleTimeoutMs, 30_000),
    retry: resolveRetry(retry),
    logger: logger?.child({ component: 'twilio-client' }),
    onRetry: options.onRetry,
    onRequest: options.onRequest,
    breaker: resolveBreaker(options.breaker),
  };
}

function resolveBreaker(breaker: unknown): UpstreamBreaker {
  if (breaker === undefined) return new UpstreamBreaker();
  if (!(breaker instanceof UpstreamBreaker))
    throw new TypeError('options.breaker must be an UpstreamBreaker');
  return breaker;
}

function resolveBaseUrl(raw: string): URL {
  let baseUrl: URL;
  try {
    baseUrl = new URL(raw);
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
  return baseUrl;
}

/** The Basic `Authorization` value: `accountSid:authToken`, or `apiKey:apiSecret`. */
function resolveAuthorization(options: TwilioClientOptions): string {
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
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

function resolveRetry(retry: TwilioRetryPolicy): Required<TwilioRetryPolicy> {
  return {
    maxAttempts: positiveInt('options.retry.maxAttempts', retry.maxAttempts, 6),
    baseDelayMs: nonNegativeInt('options.retry.baseDelayMs', retry.baseDelayMs, 200),
    maxDelayMs: nonNegativeInt('options.retry.maxDelayMs', retry.maxDelayMs, 5000),
    maxTotalMs: nonNegativeInt('options.retry.maxTotalMs', retry.maxTotalMs, 30_000),
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

export function isNonNegativeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
