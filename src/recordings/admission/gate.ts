/**
 * What stands between a flight and the upstream when this process is about to download a recording itself:
 * the upstream breaker (fail fast while Twilio asked us to wait), the business's cold-download rate limit
 * (only for a new download, not a takeover of another process's), then the {@link Admission} queue. A
 * request that finds the file, joins a flight or follows another process's download never gets here.
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

export interface UpstreamGateOptions {
  /** @default no cap */
  admission?: Admission | undefined;
  /** @default none */
  breaker?: BreakerView | undefined;
  /** Per-business limit on new downloads. @default none */
  coldLimiter?: RateLimiter | undefined;
  /** Told of each refusal before the queue: breaker open, or the rate limit. @default none */
  onRefused?: ((reason: 'throttled' | 'rate_limited') => void) | undefined;
}

/** A permit for no admission at all. */
const NO_PERMIT: AdmissionPermit = { release() {} };

export class UpstreamGate {
  readonly #o: UpstreamGateOptions;

  constructor(options: UpstreamGateOptions = {}) {
    this.#o = options;
  }

  /**
   * Resolves with the permit to download (release it when the download ends). `fresh`: a new download, not
   * a takeover. Throws RECGATE_UPSTREAM_THROTTLED, RECGATE_RATE_LIMITED, RECGATE_UPSTREAM_BUSY, or
   * `signal`'s reason.
   */
  async enter(businessId: string, fresh: boolean, signal: AbortSignal): Promise<AdmissionPermit> {
    const { breaker, coldLimiter, admission } = this.#o;
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

  #refused(reason: 'throttled' | 'rate_limited'): void {
    try {
      this.#o.onRefused?.(reason);
    } catch {
      // Metrics must never break serving.
    }
  }
}
