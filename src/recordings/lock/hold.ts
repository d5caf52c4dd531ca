/**
 * What both lock backends do the same way once a handle holds its lock: the `lost` signal, the fencing
 * token, `verify()` and the heartbeat that runs it. A backend supplies `check`, one cheap look at whether
 * the lock is still this hold's, and `drop`, which lets go of what the handle still has of a lost lock.
 */
import { performance } from 'node:perf_hooks';
import { createError, type RecgateError } from '../../errors.js';

/** The `lost` of a handle that holds nothing: it never aborts. */
export const NEVER_LOST: AbortSignal = new AbortController().signal;

/** The rejection of `verify()` on a handle that holds nothing. */
export function notHeld(): RecgateError {
  return createError('RECGATE_LOCK_LOST', { cause: new Error('this handle does not hold the lock') });
}

export interface HoldOptions {
  /** The fencing token of this hold. */
  token: string;
  /** Pause between the end of one heartbeat check and the start of the next, ms. */
  heartbeatMs: number;
  /** Resolves if the lock is still this hold's; rejects with what is wrong otherwise. One round trip. */
  check: () => Promise<void>;
  /** Called once, when the hold is lost: release the descriptor or session that still pins the lock. */
  drop: () => void;
  /**
   * The heartbeat starts only when `lost` is first read during the hold, at once if the last check (the
   * acquisition counts as one) is older than `heartbeatMs`. For a backend whose heartbeat does nothing but
   * watch for a loss (a file's `stat`): a hold nobody watches, such as a download's while it waits in the
   * admission queue, costs no checks. @default false (the heartbeat runs from the acquisition)
   */
  whileWatched?: boolean;
}

/** One hold of a lock, from the acquisition that began it to `end()` (unlock) or loss. */
export class Hold {
  readonly token: string;
  readonly #lost = new AbortController();
  readonly #check: () => Promise<void>;
  readonly #drop: () => void;
  readonly #heartbeatMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** The check running now; checks run one at a time, so a database session never sees two at once. */
  #checking: Promise<void> | undefined;
  #ended = false;
  /** Whether the heartbeat runs (see {@link HoldOptions.whileWatched}). */
  #beating = false;
  /** When the last check that found the lock this hold's began (`performance.now()`); the acquisition counts. */
  #checkedAt = performance.now();

  constructor(options: HoldOptions) {
    this.token = options.token;
    this.#check = options.check;
    this.#drop = options.drop;
    this.#heartbeatMs = options.heartbeatMs;
    if (options.whileWatched !== true) this.#startBeating();
  }

  get lost(): AbortSignal {
    if (!this.#beating) this.#startBeating();
    return this.#lost.signal;
  }

  /** Neither ended nor lost. */
  get held(): boolean {
    return !this.#ended && !this.#lost.signal.aborted;
  }

  /** Runs a check after any running one; rejects with RECGATE_LOCK_LOST (and loses the hold) if it fails. */
  verify(): Promise<void> {
    if (this.#lost.signal.aborted) return Promise.reject(this.#lost.signal.reason);
    if (this.#ended) return Promise.reject(notHeld());
    const previous = this.#checking;
    const run = (async () => {
      await previous?.catch(() => undefined);
      if (this.#lost.signal.aborted) throw this.#lost.signal.reason;
      const started = performance.now();
      try {
        await this.#check();
        this.#checkedAt = started;
      } catch (err) {
        this.lose(err);
        throw this.#lost.signal.aborted ? this.#lost.signal.reason : lostError(err);
      }
    })();
    this.#checking = run;
    void run.then(
      () => this.#settled(run),
      () => this.#settled(run),
    );
    return run;
  }

  /**
   * Marks the hold lost because of `cause` (a backend event or a failed check): aborts `lost` and drops
   * what pins the lock. Does nothing once the hold ended or was lost already.
   */
  lose(cause: unknown): void {
    if (!this.held) return;
    clearTimeout(this.#timer);
    this.#lost.abort(lostError(cause));
    this.#drop();
  }

  /**
   * Ends the hold for an unlock: stops the heartbeat and waits for a running check, so the backend can
   * release the lock on a quiet descriptor or session. Never aborts `lost`.
   */
  async end(): Promise<void> {
    this.#ended = true;
    clearTimeout(this.#timer);
    await this.#checking?.catch(() => undefined);
  }

  #settled(run: Promise<void>): void {
    if (this.#checking === run) this.#checking = undefined;
  }

  /** Starts the heartbeat: its first beat falls `heartbeatMs` after the last check. */
  #startBeating(): void {
    this.#beating = true;
    this.#schedule(Math.max(0, this.#checkedAt + this.#heartbeatMs - performance.now()));
  }

  #schedule(delayMs = this.#heartbeatMs): void {
    if (!this.held) return;
    this.#timer = setTimeout(() => {
      // A check already running (a verify) answers for this beat too.
      void (this.#checking ?? this.verify()).then(
        () => this.#schedule(),
        () => undefined,
      );
    }, delayMs);
    this.#timer.unref();
  }
}

function lostError(cause: unknown): RecgateError {
  return createError('RECGATE_LOCK_LOST', { cause });
}
