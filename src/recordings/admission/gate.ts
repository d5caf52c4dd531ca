/**
 * What stands between a flight and the upstream when this process is about to download a recording itself:
 * the breaker of the account the recording is read from (fail fast while Twilio asked that account to
 * wait), the business's cold-download rate limit (only for a new download, not a takeover of another
 * process's), then the {@link Admission} queue. A refusal by the breaker spends neither a rate-limit token
 * nor a queue place, and a business on another account is not refused by it. A request that finds the
 * file, joins a flight or follows another process's download never gets here.
 */
import type { RecgateError } from '../../errors.js';
import { createError } from '../../errors.js';
import type { RateLimiter } from '../../limits/rate-limiter.js';
import type { Admission, AdmissionPermit } from './admission.js';

/** The breaker as the gate reads it (src/upstream/breaker.ts). */
export interface BreakerView {
  remainingMs(): number;
  error(): RecgateError;
}

/**
 * The breaker that guards Twilio account `account` (`undefined`: the main account), or `undefined` when none
 * does (see `AccountDirectory.breakerFor`). May throw (a failed store read): the download then fails with it.
 */
export type BreakerFor = (
  account: string | undefined,
) => BreakerView | undefined | Promise<BreakerView | undefined>;

export interface UpstreamGateOptions {
  /** @default no cap */
  admission?: Admission | undefined;
  /** One breaker for every account, or the breaker of each account. @default none */
  breaker?: BreakerView | BreakerFor | undefined;
  /** Per-business limit on new downloads. @default none */
  coldLimiter?: RateLimiter | undefined;
  /** Told of each refusal before the queue: breaker open, or the rate limit. @default none */
  onRefused?: ((reason: 'throttled' | 'rate_limited') => void) | undefined;
}

/** Who asks to download, and from where. */
export interface GateRequest {
  /** The business of the request (its rate limit, its turn in the queue). */
  businessId: string;
  /** The Twilio account the recording is read from (`RecordingRef.account`); `undefined`: the main one. */
  account: string | undefined;
  /** A new download (the rate limit applies), not a takeover of another process's. */
  fresh: boolean;
}

/** A permit for no admission at all. */
const NO_PERMIT: AdmissionPermit = { release() {} };

export class UpstreamGate {
  readonly #o: UpstreamGateOptions;

  constructor(options: UpstreamGateOptions = {}) {
    this.#o = options;
  }

  /**
   * Resolves with the permit to download (release it when the download ends). Throws
   * RECGATE_UPSTREAM_THROTTLED, RECGATE_RATE_LIMITED, RECGATE_UPSTREAM_BUSY, what the breaker lookup
   * threw, or `signal`'s reason.
   */
  async enter(request: GateRequest, signal: AbortSignal): Promise<AdmissionPermit> {
    const { coldLimiter, admission } = this.#o;
    const { businessId, account, fresh } = request;
    const breaker = await this.#breakerFor(account);
    if (breaker !== undefined && breaker.remainingMs() > 0) {
      this.#refused('throttled');
      throw breaker.error();
    }
    if (fresh && coldLimiter !== undefined) {
      const admit = coldLimiter.take(businessId);
      if (!admit.ok) {
        this.#refused('rate_limited');
        throw createError('RECGATE_RATE_LIMITED', {
          message: 'Too many recordings fetched for this business; try again later',
          headers: { 'retry-after': String(admit.retryAfterS) },
        });
      }
    }
    signal.throwIfAborted();
    return admission === undefined ? NO_PERMIT : admission.acquire(businessId, signal);
  }

  #breakerFor(account: string | undefined): BreakerView | undefined | Promise<BreakerView | undefined> {
    const { breaker } = this.#o;
    return typeof breaker === 'function' ? breaker(account) : breaker;
  }

  #refused(reason: 'throttled' | 'rate_limited'): void {
    try {
      this.#o.onRefused?.(reason);
    } catch {
      // Metrics must never break serving.
    }
  }
}
