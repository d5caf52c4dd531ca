/**
 * The retry policy of every request the client sends: which failures are worth another attempt (not-ready
 * 404s on media, 429, 5xx, broken connections, headers timeouts), how long to wait before it (exponential
 * backoff with full jitter, or the server's `Retry-After`), and when to give up (`retry.maxAttempts`
 * attempts, or `retry.maxTotalMs` after the operation began, whichever comes first).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { createError, isRecgateError, type RecgateError } from '../errors.js';
import type { UpstreamBreaker } from './breaker.js';
import { abortError, errorCode, headerValue } from './http-util.js';
import type { RetryEvent, RetryReason, TwilioOperation, TwilioRetryPolicy } from './options.js';
import { type ErrorDetail, upstreamStatusError } from './twilio-json.js';

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

/** One client operation: what the retry loop reports and the signal that ends it. */
export interface OperationContext {
  operation: TwilioOperation;
  /** The call or recording SID the operation is about. */
  sid: string;
  signal: AbortSignal | undefined;
}

/** An attempt that failed in a way worth retrying. */
export interface Failure {
  reason: RetryReason;
  status: number | null;
  /** The server's `Retry-After`, in ms, when it gave a usable one. */
  retryAfterMs: number | null;
  cause: unknown;
}

/** Thrown inside an attempt to ask the retry loop for another try. Never escapes the client. */
export class RetryableFailure extends Error {
  readonly failure: Failure;
  constructor(failure: Failure) {
    super(`retryable upstream failure: ${failure.reason}`);
    this.failure = failure;
  }
}

/** What the retry loop needs from the client's options. */
export interface RetrySettings {
  retry: Required<TwilioRetryPolicy>;
  /** No retry goes out before it closes; one that could not wait for it ends the operation throttled. */
  breaker: UpstreamBreaker | undefined;
  logger: Logger | undefined;
  onRetry: ((event: RetryEvent) => void) | undefined;
}

/**
 * Runs `attempt` until it succeeds, fails terminally, or the retry budget runs out. A terminal failure that
 * is not a RecgateError becomes RECGATE_UPSTREAM_UNAVAILABLE; a spent budget becomes the error
 * {@link exhausted} names; an abort, at any point, is an AbortError.
 */
export async function withRetry<T>(
  ctx: OperationContext,
  settings: RetrySettings,
  attempt: () => Promise<T>,
): Promise<T> {
  const started = Date.now();
  for (let n = 1; ; n++) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    let failure: Failure;
    try {
      return await attempt();
    } catch (err) {
      failure = retryableFailure(ctx, err);
    }
    const elapsed = Date.now() - started;
    // The server's Retry-After, or the breaker's window if another request opened it for longer.
    const open = settings.breaker?.remainingMs() ?? 0;
    const notBefore = open > 0 ? Math.max(failure.retryAfterMs ?? 0, open) : failure.retryAfterMs;
    const delayMs = backoffDelay(settings.retry, n, notBefore, elapsed);
    if (delayMs === undefined) {
      settings.logger?.warn(
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
      const error = exhausted(ctx, failure, n, elapsed);
      throw settings.breaker !== undefined && settings.breaker.remainingMs() > 0
        ? settings.breaker.error(error.cause)
        : error;
    }
    announceRetry(ctx, settings, n, failure, delayMs);
    try {
      await sleep(delayMs, undefined, ctx.signal === undefined ? undefined : { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal?.aborted) throw abortError(ctx.signal);
      throw err;
    }
  }
}

/** The failure to retry after `err`; throws when `err` ends the operation. */
function retryableFailure(ctx: OperationContext, err: unknown): Failure {
  if (ctx.signal?.aborted) throw abortError(ctx.signal);
  if (err instanceof RetryableFailure) return err.failure;
  const classified = classifyError(err);
  if (classified === null)
    throw isRecgateError(err) ? err : createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: err });
  return classified;
}

/**
 * How long to wait after failed attempt `attempt` (1-based), `elapsedMs` into the operation: the server's
 * `Retry-After` if it gave one, in full, else a full-jitter draw from an exponential backoff of at most
 * `maxDelayMs`; never more than what is left of `maxTotalMs`. `undefined` when no attempt is left, and when
 * the `Retry-After` is longer than `maxDelayMs` or than what is left: a retry is never sent sooner than the
 * server asked.
 */
export function backoffDelay(
  policy: Required<TwilioRetryPolicy>,
  attempt: number,
  retryAfterMs: number | null,
  elapsedMs: number,
  random: () => number = Math.random,
): number | undefined {
  const remaining = policy.maxTotalMs - elapsedMs;
  if (attempt >= policy.maxAttempts || remaining <= 0) return undefined;
  if (retryAfterMs !== null) {
    return retryAfterMs > policy.maxDelayMs || retryAfterMs >= remaining ? undefined : retryAfterMs;
  }
  const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.min(Math.floor(random() * (backoff + 1)), remaining);
}

/** Logs the retry at warn and tells `onRetry`, whose exceptions are logged and ignored. */
function announceRetry(
  ctx: OperationContext,
  settings: RetrySettings,
  attempt: number,
  failure: Failure,
  delayMs: number,
): void {
  const { operation, sid } = ctx;
  const { reason, status } = failure;
  settings.logger?.warn(
    { operation, sid, attempt, status, reason, delayMs, err: failure.cause },
    'Upstream request failed; retrying',
  );
  if (settings.onRetry === undefined) return;
  try {
    settings.onRetry({ operation, sid, attempt, reason, status, delayMs });
  } catch (err) {
    settings.logger?.warn({ err }, 'onRetry hook threw; ignored');
  }
}

/**
 * Maps a non-success status to a terminal RecgateError (401 and 403 are RECGATE_UPSTREAM_AUTH, other
 * statuses RECGATE_UPSTREAM_UNAVAILABLE) or, for 429 and 5xx, a RetryableFailure (thrown by the caller).
 */
export function statusFailure(
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

/** `Retry-After` as delay-seconds or an HTTP-date; `null` when absent or unusable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** A connection error or timeout before the response headers, as a Failure; `null` for anything else. */
function classifyError(err: unknown): Failure | null {
  const code = errorCode(err);
  if (code === null) return null;
  if (TIMEOUT_CODES.has(code)) return { reason: 'timeout', status: null, retryAfterMs: null, cause: err };
  if (NETWORK_CODES.has(code)) return { reason: 'network', status: null, retryAfterMs: null, cause: err };
  return null;
}

/** The error of an operation whose retries ran out: not ready, timed out, or unavailable, by the last failure. */
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
