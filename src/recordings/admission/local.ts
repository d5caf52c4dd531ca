/**
 * {@link Admission} for one process: at most `concurrency` permits out at once, and a bounded queue, fair
 * across businesses, for the requests beyond.
 *
 * Fairness is round-robin over the businesses that have someone waiting, kept as "who was served longest
 * ago": each grant stamps the business with a rising sequence number, and the next slot goes to the waiting
 * business with the smallest stamp (one never served, or forgotten, counts as oldest; ties go to whoever
 * started waiting first). Stamps are remembered after a business's queue empties, so a business cannot jump
 * the line by keeping exactly one request queued; the oldest are forgotten beyond {@link REMEMBERED}, which
 * can only move a business forward once. The bound: a request of a business that had nobody waiting gets
 * the next slot that frees, however large another business's backlog (one slot turnover at most).
 */
import { createError } from '../../errors.js';
import type { Admission, AdmissionEvent, AdmissionObserver, AdmissionPermit } from './admission.js';
import { checkInt, WaitQueue } from './queue.js';

/** Businesses whose last grant is remembered at most. */
const REMEMBERED = 10_000;

export interface LocalAdmissionOptions {
  /** Permits out at once. At least 1. */
  concurrency: number;
  /** Requests waiting at most; 0 means a request that finds no free slot is refused at once. */
  maxQueue: number;
  /** Longest wait for a slot, ms, before RECGATE_UPSTREAM_BUSY. */
  timeoutMs: number;
  /** `Retry-After` (seconds) of a refusal. @default 5 */
  retryAfterS?: number;
  /** Told of grants, refusals and changes of the counts. @default none */
  onEvent?: AdmissionObserver | undefined;
}

export class LocalAdmission implements Admission {
  readonly #concurrency: number;
  readonly #onEvent: AdmissionObserver | undefined;
  readonly #queue: WaitQueue;
  /** Last grant's sequence number per business, in grant order (a Map keeps insertion order). */
  readonly #lastServed = new Map<string, number>();
  #sequence = 0;
  #active = 0;
  #closed = false;

  constructor(options: LocalAdmissionOptions) {
    this.#concurrency = checkInt('concurrency', options.concurrency, 1);
    this.#onEvent = options.onEvent;
    this.#queue = new WaitQueue({
      maxQueue: options.maxQueue,
      timeoutMs: options.timeoutMs,
      retryAfterS: options.retryAfterS,
      onOutcome: (outcome) => this.#report(outcome),
      onChange: () => this.#changed(),
    });
  }

  acquire(businessId: string, signal?: AbortSignal): Promise<AdmissionPermit> {
    if (this.#closed) return Promise.reject(createError('RECGATE_SHUTTING_DOWN'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#active < this.#concurrency && this.#queue.size === 0) {
      this.#serve(businessId);
      this.#report({ kind: 'granted', waitMs: 0 });
      return Promise.resolve(this.#permit());
    }
    return this.#queue.wait(businessId, signal);
  }

  stats(): { active: number; queued: number } {
    return { active: this.#active, queued: this.#queue.size };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#queue.refuseAll(createError('RECGATE_SHUTTING_DOWN'));
  }

  #permit(): AdmissionPermit {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#active--;
        this.#next();
        this.#changed();
      },
    };
  }

  /** Hands free slots to the waiting business served longest ago. */
  #next(): void {
    while (this.#active < this.#concurrency && this.#queue.size > 0) {
      let chosen: string | undefined;
      let oldest = Number.POSITIVE_INFINITY;
      for (const business of this.#queue.businesses()) {
        const served = this.#lastServed.get(business) ?? -1;
        if (served < oldest) {
          oldest = served;
          chosen = business;
        }
      }
      const give = this.#queue.take(chosen!)!;
      this.#serve(chosen!);
      give(this.#permit());
    }
  }

  /** Counts a grant to `business` and stamps it. */
  #serve(business: string): void {
    this.#active++;
    this.#lastServed.delete(business);
    this.#lastServed.set(business, this.#sequence++);
    if (this.#lastServed.size > REMEMBERED) {
      this.#lastServed.delete(this.#lastServed.keys().next().value!);
    }
    this.#changed();
  }

  #changed(): void {
    this.#report({ kind: 'changed', queued: this.#queue.size, active: this.#active });
  }

  #report(event: AdmissionEvent): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // Metrics must never break admission.
    }
  }
}
