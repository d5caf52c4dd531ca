/**
 * Step 1 of a download: claim the recording. A {@link Claim} owns the recording's lock for one flight: it
 * takes it (at once, or by waiting while the flight follows another process), says when it is lost, and
 * checks it (the fencing check) before anything is published under a shared name.
 */
import type { Logger } from 'pino';
import { isRecgateError } from '../../errors.js';
import type { Lock } from '../lock/lock.js';

export class Claim {
  readonly #lock: Lock;
  readonly #log: Logger;
  #held = false;

  constructor(lock: Lock, log: Logger) {
    this.#lock = lock;
    this.#log = log;
  }

  get held(): boolean {
    return this.#held;
  }

  /** Aborts, with RECGATE_LOCK_LOST, when the lock is lost while held; never aborts otherwise. */
  get lost(): AbortSignal {
    return this.#lock.lost;
  }

  /** Takes the lock if it is free now. */
  async tryTake(): Promise<boolean> {
    this.#held = await this.#lock.tryLock();
    return this.#held;
  }

  /** Waits for the lock until `signal` aborts (then rejects with RECGATE_LOCK_TIMEOUT). */
  async take(signal: AbortSignal): Promise<void> {
    await this.#lock.lock(signal);
    this.#held = true;
  }

  /**
   * Resolves only while this flight still holds the lock and nobody took it over since; rejects with
   * RECGATE_LOCK_LOST otherwise. Run before the shared pointer moves and right before a commit's rename.
   */
  async verify(): Promise<void> {
    await this.#lock.verify();
  }

  /** Releases the lock if held; never throws (a lost lock is released already). */
  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await this.#lock.unlock().catch((err: unknown) => this.#log.warn({ err }, 'Unlocking failed'));
  }
}

export function isLockLost(err: unknown): boolean {
  return isRecgateError(err) && err.code === 'RECGATE_LOCK_LOST';
}
