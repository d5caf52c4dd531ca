/**
 * HEADs on recordings not cached, which ask Twilio's HEAD instead of downloading (`routes/download.ts`) and
 * so pass neither the download admission nor the cold-download rate limit. Two things keep them from
 * reaching Twilio unbounded:
 * - **Joined.** Requests for the same key (business, account, recording, variant) while one is asking share
 *   its answer: a stampede of agents opening one call sends one HEAD. The shared HEAD is cancelled only
 *   when every request waiting for it has gone.
 * - **Capped.** At most `max` distinct HEADs ask at once in this process; one beyond waits for a slot, first
 *   come first served, at most `waitMs`, then fails with RECGATE_UPSTREAM_BUSY (`Retry-After: 1`).
 */
import { createError } from '../errors.js';
import { ConcurrencyCap } from '../limits/concurrency.js';

export interface ColdHeadsOptions {
  /** Distinct HEADs asking at once, at most. */
  max: number;
  /** Longest wait for a slot beyond `max`, ms. */
  waitMs: number;
  /** Told each time a HEAD found no slot within `waitMs` (metrics). Exceptions are ignored. @default none */
  onBusy?: (() => void) | undefined;
}

interface Shared {
  answer: Promise<unknown>;
  /** Aborts the shared HEAD; when the last request waiting for it leaves. */
  controller: AbortController;
  waiting: number;
}

export class ColdHeads {
  readonly #cap: ConcurrencyCap;
  readonly #onBusy: ColdHeadsOptions['onBusy'];
  readonly #asking = new Map<string, Shared>();

  /** Throws TypeError naming a bad option. */
  constructor(options: ColdHeadsOptions) {
    this.#cap = new ConcurrencyCap({ max: options.max, waitMs: options.waitMs });
    this.#onBusy = options.onBusy;
  }

  /**
   * `ask(signal)`'s answer for `key`, shared with the requests for the same key meanwhile. Rejects with what
   * `ask` threw, RECGATE_UPSTREAM_BUSY when no slot was free in time, or `signal`'s reason when this request
   * goes first.
   */
  run<T>(key: string, ask: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T> {
    if (signal.aborted) return Promise.reject(signal.reason);
    let shared = this.#asking.get(key);
    if (shared === undefined) {
      const controller = new AbortController();
      const answer = this.#ask(ask, controller.signal);
      const started: Shared = { answer, controller, waiting: 0 };
      const done = () => {
        if (this.#asking.get(key) === started) this.#asking.delete(key);
      };
      answer.then(done, done);
      this.#asking.set(key, started);
      shared = started;
    }
    const joined = shared;
    joined.waiting += 1;
    return new Promise<T>((resolve, reject) => {
      const leave = () => {
        joined.waiting -= 1;
        if (joined.waiting === 0) {
          // Nobody wants it any more: a later request for the key starts afresh, not on a cancelled HEAD.
          if (this.#asking.get(key) === joined) this.#asking.delete(key);
          joined.controller.abort(signal.reason);
        }
        reject(signal.reason);
      };
      signal.addEventListener('abort', leave, { once: true });
      joined.answer.then(
        (value) => {
          signal.removeEventListener('abort', leave);
          resolve(value as T);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', leave);
          reject(err);
        },
      );
    });
  }

  /** Distinct HEADs asking now, and those waiting for a slot. */
  stats(): { active: number; waiting: number } {
    return this.#cap.stats();
  }

  async #ask<T>(ask: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T> {
    const release = await this.#cap.acquire(signal);
    if (release === undefined) {
      try {
        this.#onBusy?.();
      } catch {
        // Metrics must never break serving.
      }
      throw createError('RECGATE_UPSTREAM_BUSY', {
        message: 'Too many recordings are being looked up at the provider; try again shortly',
        headers: { 'retry-after': '1' },
      });
    }
    try {
      return await ask(signal);
    } finally {
      release();
    }
  }
}
