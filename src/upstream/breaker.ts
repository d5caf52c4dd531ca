/**
 * The circuit breaker of one Twilio account, shared by every request the process sends to that account: the
 * main account and its subaccounts share one (one set of credentials, one rate limit), and each account with
 * its own credentials has its own (kept by `accounts/directory.ts`). A 429 opens it until the response's
 * `Retry-After` has passed (or {@link BreakerOptions.defaultMs} when the header is missing or unusable);
 * while it is open no request of any kind goes to that account, and callers get RECGATE_UPSTREAM_THROTTLED
 * with `Retry-After` = the seconds left, rounded up. A later 429 can extend the open window, never shorten
 * it. It closes by itself when the window ends: the next request is the probe, and a 429 to it opens the
 * breaker again.
 */
import { createError, type RecgateError } from '../errors.js';

export interface BreakerOptions {
  /** How long a 429 without a usable `Retry-After` keeps the breaker open, ms. @default 5000 */
  defaultMs?: number;
  /** Told when the breaker opens (`open: true`, with the window in ms) or closes again. @default none */
  onChange?: ((open: boolean, windowMs: number) => void) | undefined;
  /** Clock in ms since the epoch; tests pass their own. @default Date.now */
  now?: () => number;
}

export class UpstreamBreaker {
  readonly #defaultMs: number;
  readonly #onChange: BreakerOptions['onChange'];
  readonly #now: () => number;
  #openUntil = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: BreakerOptions = {}) {
    const defaultMs = options.defaultMs ?? 5000;
    if (!Number.isSafeInteger(defaultMs) || defaultMs < 0) {
      throw new TypeError('options.defaultMs must be a non-negative integer');
    }
    this.#defaultMs = defaultMs;
    this.#onChange = options.onChange;
    this.#now = options.now ?? Date.now;
  }

  /** Opens the breaker after a 429 whose `Retry-After` was `retryAfterMs` (`null`: none usable). */
  trip(retryAfterMs: number | null): void {
    const windowMs = retryAfterMs ?? this.#defaultMs;
    const until = this.#now() + windowMs;
    if (until <= this.#openUntil || windowMs <= 0) return;
    const wasOpen = this.remainingMs() > 0;
    this.#openUntil = until;
    clearTimeout(this.#timer);
    // Only to report the close; whether it is open is always read from the clock.
    this.#timer = setTimeout(() => this.#closed(), windowMs).unref();
    if (!wasOpen) this.#report(true, windowMs);
  }

  /** Milliseconds until requests may go out again; 0 when closed. */
  remainingMs(): number {
    return Math.max(0, this.#openUntil - this.#now());
  }

  /** RECGATE_UPSTREAM_THROTTLED with `Retry-After` = the seconds left, rounded up. */
  error(cause?: unknown): RecgateError {
    const seconds = Math.max(1, Math.ceil(this.remainingMs() / 1000));
    return createError('RECGATE_UPSTREAM_THROTTLED', {
      headers: { 'retry-after': String(seconds) },
      cause: cause ?? new Error(`the upstream breaker is open for ${this.remainingMs()} ms`),
    });
  }

  /** Throws {@link error} while the breaker is open. */
  check(): void {
    if (this.remainingMs() > 0) throw this.error();
  }

  #closed(): void {
    this.#timer = undefined;
    const left = this.remainingMs();
    if (left > 0) {
      this.#timer = setTimeout(() => this.#closed(), left).unref();
      return;
    }
    this.#report(false, 0);
  }

  #report(open: boolean, windowMs: number): void {
    try {
      this.#onChange?.(open, windowMs);
    } catch {
      // Metrics must never break the client.
    }
  }
}
