/**
 * Steps that usually answer from memory (a remembered token, a call read before, a stored resolution, a
 * kept descriptor) and only sometimes wait: they return the value itself when they have it, a promise when
 * they must wait. Chaining them with these helpers runs a warm play from the route to the socket in one
 * synchronous turn, with no promise, no microtask and no closure kept alive; the first step that waits
 * turns the rest of the chain into promises, in the same order and with the same errors (a step's throw
 * becomes the chain's rejection from there on).
 */

/** A value at hand, or a promise of it. */
export type NowOrLater<T> = T | Promise<T>;

/** `next(value)` at once when `value` is at hand, else once it resolves (a rejection skips `next`). */
export function andThen<T, U>(value: NowOrLater<T>, next: (value: T) => NowOrLater<U>): NowOrLater<U> {
  return value instanceof Promise ? value.then(next) : next(value);
}

/**
 * Runs `step()`, then `cleanup()` once what it returned is settled: at once when it returned a value or
 * threw, else when its promise settles. The outcome is `step`'s, unchanged.
 */
export function finallyAfter<T>(step: () => NowOrLater<T>, cleanup: () => void): NowOrLater<T> {
  let result: NowOrLater<T>;
  try {
    result = step();
  } catch (err) {
    cleanup();
    throw err;
  }
  if (result instanceof Promise) return result.finally(cleanup);
  cleanup();
  return result;
}
