/**
 * When a small file-system call may run synchronously on the event loop.
 *
 * Under a stampede the event loop is busy accepting and routing hundreds of requests, and every call handed
 * to libuv's thread pool comes back only when the loop gets round to it: a cold request's few looks at the
 * disk before it asks the upstream (is the recording there, take its lock, is a download to resume) each
 * waited behind that backlog, several milliseconds apiece, and put the upstream request tens of milliseconds
 * after the first client's. On a local disk such a call is a few microseconds when made synchronously, less
 * than the loop's own cost of a thread-pool round trip.
 *
 * A disk answering from the medium (or a network volume) would block the loop for as long as it takes, so a
 * guard times every synchronous call: a few slower than {@link SLOW_SYNC_MS} close together (three, net of a
 * twentieth for each fast one between them) turn synchronous calls off for {@link SYNC_BACKOFF_MS}, and the
 * callers use the thread pool meanwhile. One slow call alone turns nothing off: on a busy machine the
 * process may simply have been preempted in the middle of it.
 *
 * Preemption is told apart from a slow disk, too, once a slow call has counted: from then until the count
 * fades away, each call also reads how long the thread waited for a CPU ({@link runQueueWaitMs}, Linux's
 * schedstat), and a call is slow only by the time it was not waiting for one. On a machine whose CPUs are
 * all busy (workers, the upstream and other processes on two cores) a call of a few microseconds is often
 * preempted for a scheduler slice of several milliseconds: in `npm run bench many`'s two-worker run on such
 * a machine, most slow stat, open and rename calls (1 to 8 ms) had waited nearly all of that for a CPU.
 */
import { readFileSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** A synchronous call slower than this (ms) is slow: the disk, or a preempted process, kept it waiting. */
export const SLOW_SYNC_MS = 1;
/** Slow calls, net of fast ones, that turn synchronous calls off. */
const SLOW_CALLS_OFF = 3;
/** How much each fast call takes off the count of slow ones. */
const SLOW_CALL_DECAY = 0.05;
/** How long synchronous calls stay off after that (ms). */
export const SYNC_BACKOFF_MS = 10_000;

/** What a guard reports when it turns synchronous calls off (see {@link onSyncOff}). */
export interface SyncOff {
  /** Which guard: `metadata` ({@link metadataSync}) or `reads` (the warm path's reads of finished files). */
  guard: string;
  /** How long the call that tipped it took, ms, less any time it waited for a CPU that was read. */
  tookMs: number;
  /** How long synchronous calls stay off, ms. */
  offMs: number;
}

const offListeners = new Set<(event: SyncOff) => void>();

/**
 * Calls `listener` whenever a guard of this process turns synchronous calls off: a slow disk, or a machine
 * so busy that the process is often preempted in the middle of a call. The gateway logs it and counts it
 * (`recgate_sync_io_off_total`). Returns what unsubscribes.
 */
export function onSyncOff(listener: (event: SyncOff) => void): () => void {
  offListeners.add(listener);
  return () => offListeners.delete(listener);
}

/**
 * How long, in ms, the calling thread has waited for a CPU since it started (runnable but not running: the
 * second field of Linux's `/proc/thread-self/schedstat`), or `undefined` where that is not known (another
 * OS, a kernel without schedstat). A file read of a few microseconds, made only after a slow call.
 */
export function runQueueWaitMs(): number | undefined {
  try {
    const waitedNs = Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[1]);
    return Number.isFinite(waitedNs) ? waitedNs / 1e6 : undefined;
  } catch {
    return undefined;
  }
}

const unknownWait = (): undefined => undefined;

export class SyncGuard {
  readonly #clock: () => number;
  readonly #name: string;
  readonly #waited: () => number | undefined;
  /** The clock time until which {@link on} is false, after slow calls. */
  #offUntil = 0;
  /** Recent slow calls: +1 for each, fading by {@link SLOW_CALL_DECAY} with each fast one. */
  #slow = 0;

  /**
   * @param clock milliseconds from a monotonic origin; tests pass a fake one. @default performance.now
   * @param name the guard's name in {@link SyncOff}. @default `sync`
   * @param waited the calling thread's time waiting for a CPU so far, ms, or `undefined` when unknown; it
   *   must follow `clock`, so tests with a fake clock pass a fake one too. @default {@link runQueueWaitMs}
   *   with the default clock, nothing (never known) with another
   */
  constructor(clock?: () => number, name = 'sync', waited?: () => number | undefined) {
    this.#clock = clock ?? (() => performance.now());
    this.#name = name;
    this.#waited = waited ?? (clock === undefined ? runQueueWaitMs : unknownWait);
  }

  /** Whether synchronous calls are allowed now. */
  get on(): boolean {
    return this.#clock() >= this.#offUntil;
  }

  /**
   * Runs `call` synchronously and books how long it took (also when it throws), less the time the thread
   * waited for a CPU meanwhile when that is read (only while an earlier slow call still counts).
   */
  time<T>(call: () => T): T {
    const waitedBefore = this.#slow > 0 ? this.#waited() : undefined;
    const started = this.#clock();
    try {
      return call();
    } finally {
      const ended = this.#clock();
      let took = ended - started;
      if (took > SLOW_SYNC_MS && waitedBefore !== undefined) {
        const waitedAfter = this.#waited();
        if (waitedAfter !== undefined) took -= Math.max(0, waitedAfter - waitedBefore);
      }
      if (took <= SLOW_SYNC_MS) this.#slow = Math.max(0, this.#slow - SLOW_CALL_DECAY);
      else if (++this.#slow >= SLOW_CALLS_OFF) {
        this.#slow = 0;
        this.#offUntil = ended + SYNC_BACKOFF_MS;
        this.#reportOff(took);
      }
    }
  }

  #reportOff(tookMs: number): void {
    const event: SyncOff = { guard: this.#name, tookMs, offMs: SYNC_BACKOFF_MS };
    for (const listener of offListeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is no reason to fail the call that was timed.
      }
    }
  }
}

/**
 * The process's guard for the metadata calls on a cold request's way to the upstream: looking for a file
 * that is usually not there, and the lock file's open and stats (see `recordings/store/fs-files.ts` and
 * `recordings/lock/fs.ts`).
 */
export const metadataSync = new SyncGuard(undefined, 'metadata');

/**
 * Whether nothing is at `path`, by one synchronous `stat` when {@link metadataSync} allows: `true` is
 * certain (at the moment of the look); `false` means the caller looks the usual way (something is there,
 * the look failed otherwise, or synchronous calls are off).
 */
export function surelyMissing(path: string): boolean {
  if (!metadataSync.on) return false;
  try {
    return metadataSync.time(() => statSync(path, { throwIfNoEntry: false })) === undefined;
  } catch {
    return false;
  }
}
