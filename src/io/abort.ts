/** Waiting on shared work with a caller's own signal. */

/**
 * Resolves as `promise` does, or rejects with `signal`'s reason as soon as it aborts, whichever comes first.
 * The work behind `promise` goes on: other callers may be waiting on it too.
 */
export async function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}
