/**
 * A per-process cap on how many of one kind of work run at once: a caller beyond it waits, first come first
 * served, at most `waitMs`, and is then told there was no slot. Used for HEADs on recordings not cached
 * (`http/cold-heads.ts`), which ask Twilio but skip the download admission.
 */

/** Frees a slot for the next waiter; calling it again does nothing. */
export type ReleaseSlot = () => void;

export interface ConcurrencyCapOptions {
  /** Slots at most. A positive integer. */
  max: number;
  /** Longest wait for a slot, ms; 0: no wait. A non-negative integer. */
  waitMs: number;
}

export class ConcurrencyCap {
  readonly #max: number;
  readonly #waitMs: number;
  #active = 0;
  /** Waiters in arrival order; each takes its slot when called. */
  readonly #waiting = new Set<() => void>();

  /** Throws TypeError naming a bad option. */
  constructor(options: ConcurrencyCapOptions) {
    if (!Number.isSafeInteger(options.max) || options.max < 1) {
      throw new TypeError('options.max must be a positive integer');
    }
    if (!Number.isSafeInteger(options.waitMs) || options.waitMs < 0) {
      throw new TypeError('options.waitMs must be a non-negative integer');
    }
    this.#max = options.max;
    this.#waitMs = options.waitMs;
  }

  /**
   * Resolves with a slot once one is free, or with `undefined` when none was within `waitMs`. Rejects with
   * `signal`'s reason when it aborts first; the waiter has then left.
   */
  acquire(signal?: AbortSignal): Promise<ReleaseSlot | undefined> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#active < this.#max && this.#waiting.size === 0) return Promise.resolve(this.#take());
    if (this.#waitMs === 0) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const leave = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#waiting.delete(grant);
      };
      const grant = () => {
        leave();
        resolve(this.#take());
      };
      const onAbort = () => {
        leave();
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        leave();
        resolve(undefined);
      }, this.#waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.add(grant);
    });
  }

  /** Slots taken now, and callers waiting for one. */
  stats(): { active: number; waiting: number } {
    return { active: this.#active, waiting: this.#waiting.size };
  }

  #take(): ReleaseSlot {
    this.#active += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active -= 1;
      const next = this.#waiting.values().next();
      if (!next.done) next.value();
    };
  }
}
