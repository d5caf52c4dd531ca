/**
 * The waiting room both admissions share: requests waiting for a slot, grouped by business, bounded in depth
 * and in wait, and left by a request whose signal aborts. It decides nothing about order: the admission
 * that owns it picks the business to serve next ({@link WaitQueue.businesses} lists those waiting, in the
 * order they started) and hands that business's oldest waiter a permit ({@link WaitQueue.take}).
 */
import { createError } from '../../errors.js';
import type { AdmissionPermit, AdmissionRejection } from './admission.js';

export interface WaitQueueOptions {
  /** Requests waiting at most; 0 means none may wait. */
  maxQueue: number;
  /** Longest wait, ms, before RECGATE_UPSTREAM_BUSY. */
  timeoutMs: number;
  /** `Retry-After` (seconds) of a refusal. @default 5 */
  retryAfterS?: number | undefined;
  /** Told when a waiter is granted (`waitMs` since it started waiting) or leaves without a slot. */
  onOutcome(
    outcome: { kind: 'granted'; waitMs: number } | { kind: 'rejected'; reason: AdmissionRejection },
  ): void;
  /** Told after the number waiting changed. */
  onChange(): void;
}

interface Waiter {
  business: string;
  enqueuedAt: number;
  grant(permit: AdmissionPermit): void;
  refuse(err: unknown, reason: AdmissionRejection | undefined): void;
}

export class WaitQueue {
  readonly #o: WaitQueueOptions & { retryAfterS: number };
  /** Waiting businesses in the order they started waiting, each with its waiters oldest first. */
  readonly #waiting = new Map<string, Waiter[]>();
  #size = 0;

  /** Throws a TypeError naming a bad `maxQueue`, `timeoutMs` or `retryAfterS`. */
  constructor(options: WaitQueueOptions) {
    this.#o = {
      ...options,
      maxQueue: checkInt('maxQueue', options.maxQueue, 0),
      timeoutMs: checkInt('timeoutMs', options.timeoutMs, 1),
      retryAfterS: checkInt('retryAfterS', options.retryAfterS ?? 5, 1),
    };
  }

  /** Requests waiting now. */
  get size(): number {
    return this.#size;
  }

  /** The businesses with someone waiting, in the order they started waiting. */
  businesses(): IterableIterator<string> {
    return this.#waiting.keys();
  }

  /**
   * Waits for {@link take} to hand `business` a permit. Rejects with RECGATE_UPSTREAM_BUSY at once when the
   * queue is full (`maxQueue` plus `spare`: places for requests that may be granted as soon as the owner
   * looks) and no other business holds more places (see {@link #makeRoom}), or after the timeout; with
   * `signal`'s reason when it aborts.
   */
  wait(business: string, signal: AbortSignal | undefined, spare = 0): Promise<AdmissionPermit> {
    if (this.#size >= this.#o.maxQueue + spare && !this.#makeRoom(business)) {
      this.#o.onOutcome({ kind: 'rejected', reason: 'queue_full' });
      return Promise.reject(this.refusal('queue_full'));
    }
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
          this.#o.onOutcome({ kind: 'granted', waitMs: performance.now() - waiter.enqueuedAt });
          resolve(permit);
        },
        refuse: (err, reason) => {
          cleanup();
          if (reason !== undefined) this.#o.onOutcome({ kind: 'rejected', reason });
          this.#o.onChange();
          reject(err);
        },
      };
      const onAbort = () => waiter.refuse(signal!.reason, 'abandoned');
      const timer = setTimeout(() => waiter.refuse(this.refusal('timeout'), 'timeout'), this.#o.timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = this.#waiting.get(business);
      if (list === undefined) this.#waiting.set(business, [waiter]);
      else list.push(waiter);
      this.#size++;
      this.#o.onChange();
    });
  }

  /**
   * Takes `business`'s oldest waiter out of the queue and returns what hands it its permit (call it at
   * once); `undefined` when the business has nobody waiting.
   */
  take(business: string): ((permit: AdmissionPermit) => void) | undefined {
    const waiter = this.#waiting.get(business)?.[0];
    if (waiter === undefined) return undefined;
    this.#remove(waiter);
    return (permit) => waiter.grant(permit);
  }

  /** Refuses every waiter with `err`. */
  refuseAll(err: unknown): void {
    for (const waiters of [...this.#waiting.values()]) {
      for (const waiter of [...waiters]) waiter.refuse(err, undefined);
    }
  }

  /** RECGATE_UPSTREAM_BUSY for a full queue or a wait that ran out, with `Retry-After`. */
  refusal(reason: 'queue_full' | 'timeout') {
    return createError('RECGATE_UPSTREAM_BUSY', {
      message:
        reason === 'queue_full'
          ? 'Too many recordings are waiting to be fetched from the provider; try again shortly'
          : 'Waited too long for a turn to fetch the recording from the provider; try again shortly',
      headers: { 'retry-after': String(this.#o.retryAfterS) },
    });
  }

  /** Takes a waiter out of the queue (no-op if it is not in it). */
  #remove(waiter: Waiter): void {
    const list = this.#waiting.get(waiter.business);
    const index = list?.indexOf(waiter) ?? -1;
    if (list === undefined || index < 0) return;
    list.splice(index, 1);
    this.#size--;
    if (list.length === 0) this.#waiting.delete(waiter.business);
  }

  /**
   * A full queue refuses the newest waiter of the business with the most places, when `business` has fewer:
   * a backlog can fill the queue, never keep another business out of it.
   */
  #makeRoom(business: string): boolean {
    if (this.#o.maxQueue === 0) return false;
    let largest: Waiter[] | undefined;
    for (const list of this.#waiting.values()) {
      if (largest === undefined || list.length > largest.length) largest = list;
    }
    const own = this.#waiting.get(business)?.length ?? 0;
    if (largest === undefined || largest.length <= own + 1) return false;
    largest.at(-1)!.refuse(this.refusal('queue_full'), 'queue_full');
    return true;
  }
}

/** `value`, if it is an integer of at least `min`; else a TypeError naming `options.{name}`. */
export function checkInt(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`options.${name} must be an integer >= ${min}`);
  }
  return value;
}
