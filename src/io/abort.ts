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

/**
 * A signal, or a function that makes it when it is first needed: for a caller's wait that a warm request
 * never has (see {@link ClientGone}). Whoever takes one calls it only on the way to waiting.
 */
export type LazySignal = AbortSignal | (() => AbortSignal);

/** The signal `lazy` stands for, made now if it is a function. */
export function signalOf(lazy: LazySignal | undefined): AbortSignal | undefined {
  return typeof lazy === 'function' ? lazy() : lazy;
}

/** What {@link ClientGone} listens to: a Node response (or anything that emits `close` once). */
interface Closable {
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

/**
 * Aborts with `reason()` when `response` closes before {@link release}, through a signal made only when
 * {@link signal} is first read. A play served from disk at once never reads it, and in Node 20 an
 * AbortController with its signal costs about 5 us to make, more than the rest of a cache hit's own
 * bookkeeping. Read after the response closed, the signal is made already aborted.
 */
export class ClientGone {
  readonly #response: Closable;
  readonly #reason: () => unknown;
  #controller: AbortController | undefined;
  #closed = false;
  readonly #onClose = (): void => {
    this.#closed = true;
    this.#controller?.abort(this.#reason());
  };

  constructor(response: Closable, reason: () => unknown) {
    this.#response = response;
    this.#reason = reason;
    response.once('close', this.#onClose);
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#closed) this.#controller.abort(this.#reason());
    }
    return this.#controller.signal;
  }

  /** Stops listening: a close from now on aborts nothing. */
  release(): void {
    this.#response.off('close', this.#onClose);
  }
}
