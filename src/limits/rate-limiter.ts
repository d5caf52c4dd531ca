/**
 * Per-key token buckets: the one rate limiter of recgate, used per business for the API and for cold
 * downloads. A bucket holds up to `burst` tokens and refills at `ratePerS`; a request takes one token or is
 * told how long until one is there (the `Retry-After` it answers with).
 *
 * Memory is bounded: buckets that have refilled completely are forgotten (a fresh bucket is full, so
 * forgetting one changes nothing), and at most `maxKeys` are kept; beyond that the least recently used key
 * is dropped, which can only make the limiter more lenient, never refuse a request it should allow.
 */

export interface RateLimiterOptions {
  /** Tokens added per second. */
  ratePerS: number;
  /** Bucket size: requests allowed at once after a quiet period. At least 1. */
  burst: number;
  /** Keys tracked at most. @default 100000 */
  maxKeys?: number;
  /** Clock in ms; tests pass their own. @default performance.now */
  now?: () => number;
}

export type Admit = { ok: true } | { ok: false; retryAfterS: number };

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  /** In least-recently-used order (a Map keeps insertion order; a touched key is re-inserted). */
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: RateLimiterOptions) {
    if (!(options.ratePerS > 0) || !Number.isFinite(options.ratePerS)) {
      throw new RangeError('ratePerS must be a positive number');
    }
    if (!(options.burst >= 1) || !Number.isFinite(options.burst)) {
      throw new RangeError('burst must be at least 1');
    }
    this.#ratePerMs = options.ratePerS / 1000;
    this.#burst = options.burst;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Takes one token from `key`'s bucket, or says in whole seconds (at least 1) when one will be there. */
  take(key: string): Admit {
    const now = this.#now();
    const bucket = this.#buckets.get(key);
    let tokens = this.#burst;
    if (bucket !== undefined) {
      this.#buckets.delete(key);
      tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) * this.#ratePerMs);
    }
    if (tokens < 1) {
      this.#buckets.set(key, { tokens, at: now });
      return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - tokens) / this.#ratePerMs / 1000)) };
    }
    this.#buckets.set(key, { tokens: tokens - 1, at: now });
    this.#prune(now);
    return { ok: true };
  }

  /** Keys tracked now (for tests and metrics). */
  get size(): number {
    return this.#buckets.size;
  }

  #prune(now: number): void {
    // The oldest entries come first; those full again are forgotten, then the LRU ones beyond the cap.
    for (const [key, bucket] of this.#buckets) {
      const full = bucket.tokens + (now - bucket.at) * this.#ratePerMs >= this.#burst;
      if (!full && this.#buckets.size <= this.#maxKeys) break;
      this.#buckets.delete(key);
    }
  }
}

/**
 * One worker's share of a per-host budget: under `--workers N` the primary spreads connections evenly, and a
 * request may land on any worker, so each enforces rate/N and burst/N, the burst rounded up (at least 1).
 */
export function workerShare(
  ratePerS: number,
  burst: number,
  workers: number,
): { ratePerS: number; burst: number } {
  return { ratePerS: ratePerS / workers, burst: Math.max(1, Math.ceil(burst / workers)) };
}
