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
 * One handle on the lock for one id. A hold begins when `lock()` or `tryLock()` takes the lock and ends
 * with `unlock()`, or earlier when the lock is lost.
 *
 * Crash: the lock must be released by the backend itself when the holding process dies (the kernel for file
 * locks, the server for a database session), so no caller ever guesses staleness from timestamps.
 * Timeout: every wait is bounded by an AbortSignal; a wait that runs out rejects with RecgateError
 * RECGATE_LOCK_TIMEOUT and leaves the lock untaken.
 * Loss: a backend can take a lock away from a live holder (its database session ended, someone deleted the
 * lock file), and another handle may then take it. The holder learns of it through `lost`, soon, and for
 * certain through `verify()`, which it calls right before any step only the holder may take (renaming a
 * download into place). A lost hold holds nothing: `lock()` and `tryLock()` start a new hold, and `unlock()`
 * cleans up without touching what a later holder made.
 */
export interface Lock {
  /**
   * Waits until this handle holds the lock. Rejects with RECGATE_LOCK_TIMEOUT (its `cause` is the signal's
   * reason) as soon as `signal` aborts, and then does not hold the lock; if the lock was taken in the same
   * instant the signal aborted, it resolves and the caller holds the lock. Rejects with
   * RECGATE_STORAGE_ERROR when the backend fails, including when the connection a wait polls on dies.
   * Calling `lock` on a handle that already holds the lock resolves at once.
   */
  lock(signal: AbortSignal): Promise<void>;

  /** Takes the lock if it is free right now: `true` when this handle holds it afterwards, never waits. */
  tryLock(): Promise<boolean>;

  /**
   * Releases the lock. Idempotent; a handle can lock again afterwards. Backends may remove their lock
   * artifacts (the lock file) before releasing, so they do not pile up, but never those of a later holder
   * when this hold was lost. Never aborts `lost`.
   */
  unlock(): Promise<void>;

  /**
   * Aborts when the current hold is lost. Each hold has a fresh signal, so read it after `lock()` or
   * `tryLock()` succeeds. Its reason is a RecgateError RECGATE_LOCK_LOST whose `cause` says what happened. It
   * aborts as soon as the backend tells (the database connection fails or ends), or when a check finds the
   * lock is no longer this hold's: `verify()`, or the heartbeat the locker runs every `heartbeatMs` while a
   * lock is held (the file backend's, only from the first time this is read during the hold: it checks then
   * at once if its last check is older than that, so reading it is the way to ask to be told). `unlock()`
   * does not abort it. Before the first hold, and from `unlock()` to the next hold,
   * it is a signal that never aborts; after a loss it stays the lost hold's until `unlock()` or the next
   * hold.
   */
  readonly lost: AbortSignal;

  /**
   * The fencing token of the current hold (or of the lost hold, until `unlock()`); `undefined` before the
   * first hold and after `unlock()`. Two holds of one id, by any handle, process or host, never share a
   * token. Its form is the backend's: PostgreSQL's is a decimal integer that grows with every acquisition
   * by any host using the same fencing table, so a later hold's token is greater; the file backend's is
   * unique but unordered (see fs.ts).
   */
  readonly token: string | undefined;

  /**
   * Resolves only if, at this moment, this handle still holds the lock and no later hold has begun.
   * Otherwise, including when the backend cannot answer, rejects with RECGATE_LOCK_LOST and aborts `lost`
   * (when there was a hold to lose). One round trip to the backend (a `stat`, a query); it waits for a
   * heartbeat check already running on the same connection rather than run beside it.
   */
  verify(): Promise<void>;
}
