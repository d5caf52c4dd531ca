/**
 * The lock that makes one process (and, with a shared backend, one host) the only downloader of a
 * recording. Code outside this folder names only {@link Locker} and {@link Lock}; `fs.ts` implements them
 * with kernel file locks for the processes of one host, `postgres.ts` with PostgreSQL session-level
 * advisory locks for several hosts.
 */

/** Creates lock handles. One locker serves the whole process; it holds no lock itself. */
export interface Locker {
  /**
   * Returns a new, unlocked handle for `id` (a call SID). Handles for the same id exclude each other
   * whether they live in one process or in several; a handle is not shared between concurrent tasks.
   */
  newLock(id: string): Lock;

  /**
   * Removes what crashed holders left behind (for example lock files) for ids nobody holds now, if the
   * backend leaves anything. Never removes anything a live holder uses. Resolves to the number removed.
   */
  sweep?(): Promise<number>;
}

/**
 * One handle on the lock for one id.
 *
 * Crash: the lock must be released by the backend itself when the holding process dies (the kernel for file
 * locks, the server for a database session), so no caller ever guesses staleness from timestamps.
 * Timeout: every wait is bounded by an AbortSignal; a wait that runs out rejects with RecgateError
 * RECGATE_LOCK_TIMEOUT and leaves the lock untaken.
 */
export interface Lock {
  /**
   * Waits until this handle holds the lock. Rejects with RECGATE_LOCK_TIMEOUT (its `cause` is the signal's
   * reason) as soon as `signal` aborts, and then does not hold the lock; if the lock was taken in the same
   * instant the signal aborted, it resolves and the caller holds the lock. Rejects with
   * RECGATE_STORAGE_ERROR when the backend fails. Calling `lock` on a handle that already holds the lock
   * resolves at once.
   */
  lock(signal: AbortSignal): Promise<void>;

  /** Takes the lock if it is free right now: `true` when this handle holds it afterwards, never waits. */
  tryLock(): Promise<boolean>;

  /**
   * Releases the lock. Idempotent; a handle can lock again afterwards. Backends may remove their lock
   * artifacts (the lock file) before releasing, so they do not pile up.
   */
  unlock(): Promise<void>;
}
