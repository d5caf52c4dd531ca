/**
 * {@link Admission} for one process: at most `concurrency` permits out at once, and a bounded queue, fair
 * across businesses, for the requests beyond.
 *
 * Fairness is round-robin over the businesses that have someone waiting, kept as "who was served longest
 * ago": each grant stamps the business with a rising sequence number, and the next slot goes to the waiting
 * business with the smallest stamp (one never served, or forgotten, counts as oldest; ties go to whoever
 * started waiting first). Stamps are remembered after a business's queue empties, so a business cannot jump
 * the line by keeping exactly one request queued; the oldest are forgotten beyond {@link REMEMBERED}, which
 * can only move a business forward once.
 */
import { createError } from '../../errors.js';
import type { Admission, AdmissionObserver, AdmissionPermit, AdmissionRejection } from './admission.js';

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

interface Waiter {
  business: string;
  enqueuedAt: number;
  grant(permit: AdmissionPermit): void;
  refuse(err: unknown, reason: AdmissionRejection | undefined): void;
}

export class LocalAdmission implements Admission {
  readonly #concurrency: number;
  readonly #maxQueue: number;
  readonly #timeoutMs: number;
  readonly #retryAfterS: number;
  readonly #onEvent: AdmissionObserver | undefined;
  /** Waiting businesses in the order they started waiting, each with its waiters oldest first. */
  readonly #waiting = new Map<string, Waiter[]>();
  /** Last grant's sequence number per business, in grant order (a Map keeps insertion order). */
  readonly #lastServed = new Map<string, number>();
  #sequence = 0;
  #queued = 0;
  #active = 0;
  #closed = false;

  constructor(options: LocalAdmissionOptions) {
    this.#concurrency = checkInt('concurrency', options.concurrency, 1);
    this.#maxQueue = checkInt('maxQueue', options.maxQueue, 0);
    this.#timeoutMs = checkInt('timeoutMs', options.timeoutMs, 1);
    this.#retryAfterS = checkInt('retryAfterS', options.retryAfterS ?? 5, 1);
    this.#onEvent = options.onEvent;
  }

  acquire(businessId: string, signal?: AbortSignal): Promise<AdmissionPermit> {
    if (this.#closed) return Promise.reject(createError('RECGATE_SHUTTING_DOWN'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#active < this.#concurrency && this.#queued === 0) {
      this.#serve(businessId);
      this.#report({ kind: 'granted', waitMs: 0 });
      return Promise.resolve(this.#permit());
    }
    if (this.#queued >= this.#maxQueue && !this.#makeRoom(businessId)) {
      this.#report({ kind: 'rejected', reason: 'queue_full' });
      return Promise.reject(this.#refusal('queue_full'));
    }
    return this.#enqueue(businessId, signal);
  }

  stats(): { active: number; queued: number } {
    return { active: this.#active, queued: this.#queued };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const waiters of [...this.#waiting.values()]) {
      for (const waiter of [...waiters]) waiter.refuse(createError('RECGATE_SHUTTING_DOWN'), undefined);
    }
  }

  #enqueue(business: string, signal: AbortSignal | undefined): Promise<AdmissionPermit> {
    return new Promise<AdmissionPermit>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#remove(waiter);
      };
      const waiter: Waiter = {
        business,
        enqueuedAt: performance.now(),
        grant: (permit) => {
          cleanup();
          this.#report({ kind: 'granted', waitMs: performance.now() - waiter.enqueuedAt });
          resolve(permit);
        },
        refuse: (err, reason) => {
          cleanup();
          if (reason !== undefined) this.#report({ kind: 'rejected', reason });
          this.#changed();
          reject(err);
        },
      };
      const onAbort = () => waiter.refuse(signal!.reason, 'abandoned');
      const timer = setTimeout(() => waiter.refuse(this.#refusal('timeout'), 'timeout'), this.#timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = this.#waiting.get(business);
      if (list === undefined) this.#waiting.set(business, [waiter]);
      else list.push(waiter);
      this.#queued++;
      this.#changed();
    });
  }

  /** Takes a waiter out of the queue (no-op if it is not in it). */
  #remove(waiter: Waiter): void {
    const list = this.#waiting.get(waiter.business);
    const index = list?.indexOf(waiter) ?? -1;
    if (list === undefined || index < 0) return;
    list.splice(index, 1);
    this.#queued--;
    if (list.length === 0) this.#waiting.delete(waiter.business);
  }

  /**
   * A full queue refuses the newest waiter of the business with the most places, when `business` has fewer:
   * a backlog can fill the queue, never keep another business out of it.
   */
  #makeRoom(business: string): boolean {
    if (this.#maxQueue === 0) return false;
    let largest: Waiter[] | undefined;
    for (const list of this.#waiting.values()) {
      if (largest === undefined || list.length > largest.length) largest = list;
    }
    const own = this.#waiting.get(business)?.length ?? 0;
    if (largest === undefined || largest.length <= own + 1) return false;
    largest.at(-1)!.refuse(this.#refusal('queue_full'), 'queue_full');
    return true;
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
    while (this.#active < this.#concurrency && this.#queued > 0) {
      let chosen: Waiter[] | undefined;
      let oldest = Number.POSITIVE_INFINITY;
      for (const [business, list] of this.#waiting) {
        const served = this.#lastServed.get(business) ?? -1;
        if (served < oldest) {
          oldest = served;
          chosen = list;
        }
      }
      const waiter = chosen![0]!;
      this.#remove(waiter);
      this.#serve(waiter.business);
      waiter.grant(this.#permit());
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

  #refusal(reason: 'queue_full' | 'timeout') {
    return createError('RECGATE_UPSTREAM_BUSY', {
      message:
        reason === 'queue_full'
          ? 'Too many recordings are waiting to be fetched from the provider; try again shortly'
          : 'Waited too long for a turn to fetch the recording from the provider; try again shortly',
      headers: { 'retry-after': String(this.#retryAfterS) },
    });
  }

  #changed(): void {
    this.#report({ kind: 'changed', queued: this.#queued, active: this.#active });
  }

  #report(event: Parameters<AdmissionObserver>[0]): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // Metrics must never break admission.
    }
  }
}

function checkInt(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`options.${name} must be an integer >= ${min}`);
  }
  return value;
}
