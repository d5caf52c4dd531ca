/**
 * One recording as this process sees it while a download runs somewhere: the single-flight state every
 * request in the process shares. A flight knows the recording's size once the download's headers (or, for
 * a download in another process, its sidecar) arrive, tracks the frontier (bytes known to be on disk), and
 * wakes readers when it moves. It never holds bytes in memory: readers read the partial file.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createError, type RecgateError } from '../errors.js';
import type { CacheOutcome, RecordingRef } from './cache.js';
import { type FileInfo, READ_CHUNK, type ReadHandle } from './store/store.js';

export interface Identity {
  size: number;
  lastModified: Date;
  /** The upstream's ETag, to notice a recording that changed between two generations. */
  upstreamEtag: string | null;
}

export type FlightState = 'running' | 'complete' | 'failed';

export class Flight {
  readonly ref: RecordingRef;
  /** How this flight began: it downloads (`miss`), follows another process (`wait`), or found the file. */
  origin: CacheOutcome = 'miss';
  state: FlightState = 'running';
  error: RecgateError | undefined;
  identity: Identity | undefined;
  /** Bytes `0..frontier-1` of {@link current} are on disk and final. */
  frontier = 0;
  current: ReadHandle | undefined;
  /** Open read streams; handles close when the flight is over and this drops to 0. */
  readers = 0;
  /** Cancels the download or the watch; aborted by the cache's `close()`. */
  readonly abort = new AbortController();
  readonly ready: Promise<void>;
  /** The task that runs the flight; settles after the lock is released. */
  done: Promise<void> = Promise.resolve();

  readonly #handles = new Set<ReadHandle>();
  readonly #waiters = new Set<() => void>();
  #resolveReady!: () => void;
  #rejectReady!: (err: RecgateError) => void;

  constructor(ref: RecordingRef) {
    this.ref = ref;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // Nobody may be waiting when a flight fails; joiners read the rejection later.
    this.ready.catch(() => undefined);
  }

  get id(): string {
    return this.ref.ownerCallSid;
  }

  /** Records the size and dates; throws if a later generation disagrees with what readers were promised. */
  setIdentity(identity: Identity): void {
    const known = this.identity;
    if (known === undefined) {
      this.identity = identity;
      this.#resolveReady();
      return;
    }
    const etagChanged =
      known.upstreamEtag !== null &&
      identity.upstreamEtag !== null &&
      known.upstreamEtag !== identity.upstreamEtag;
    if (known.size !== identity.size || etagChanged) {
      throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
        message: 'The recording changed upstream during the download',
        cause: new Error(
          `size ${known.size} -> ${identity.size}, etag ${known.upstreamEtag} -> ${identity.upstreamEtag}`,
        ),
      });
    }
  }

  /** Takes ownership of a handle: it is closed when the flight ends and no reader uses it. */
  own(handle: ReadHandle): void {
    this.#handles.add(handle);
  }

  /** Switches readers to `handle`, whose first `frontier` bytes are final. */
  adopt(handle: ReadHandle, frontier: number): void {
    this.own(handle);
    this.current = handle;
    this.frontier = frontier;
    this.#notify();
  }

  advance(frontier: number): void {
    if (frontier === this.frontier) return;
    this.frontier = frontier;
    this.#notify();
  }

  /** Every byte is under the final name; `handle` reads it (the same file, or the partial it was renamed from). */
  complete(final: FileInfo, handle: ReadHandle): void {
    if (this.state !== 'running') return;
    // Throws if the finished file is not the size readers were promised.
    this.setIdentity({ size: final.size, lastModified: final.mtime, upstreamEtag: null });
    this.adopt(handle, final.size);
    this.state = 'complete';
    this.#notify();
  }

  fail(err: RecgateError): void {
    if (this.state !== 'running') return;
    this.state = 'failed';
    this.error = err;
    this.#rejectReady(err);
    this.#notify();
  }

  /** Resolves once byte `position` is readable from {@link current}; rejects if the flight fails or `signal` aborts. */
  async waitFor(position: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      if (this.state === 'failed') throw this.error!;
      if (signal.aborted) throw signal.reason;
      if (position < this.frontier && this.current !== undefined) return;
      if (this.state === 'complete') return;
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.#waiters.delete(wake);
          reject(signal.reason);
        };
        const wake = () => {
          this.#waiters.delete(wake);
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        this.#waiters.add(wake);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  createReadStream(start: number, end: number): Readable {
    return new FlightReadStream(this, start, end);
  }

  /** Closes the handles once the flight is over and no stream reads them. */
  async dispose(): Promise<void> {
    if (this.state === 'running' || this.readers > 0) return;
    const handles = [...this.#handles];
    this.#handles.clear();
    this.current = undefined;
    await Promise.all(handles.map((h) => h.close()));
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/**
 * Streams a byte range of a flight: reads what is on disk, then waits for the frontier to move. One read of
 * at most {@link READ_CHUNK} per `_read`, so memory stays bounded by the stream's high-water mark and a slow
 * client only slows its own reads.
 */
class FlightReadStream extends Readable {
  readonly #flight: Flight;
  readonly #end: number;
  readonly #abort = new AbortController();
  #position: number;
  #released = false;

  constructor(flight: Flight, start: number, end: number) {
    super({ highWaterMark: READ_CHUNK });
    this.#flight = flight;
    this.#position = start;
    this.#end = end;
    flight.readers++;
  }

  override _read(): void {
    this.#readNext().catch((err: unknown) => this.destroy(err as Error));
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#abort.abort(createError('RECGATE_SHUTTING_DOWN'));
    if (!this.#released) {
      this.#released = true;
      this.#flight.readers--;
      void this.#flight.dispose();
    }
    callback(err);
  }

  async #readNext(): Promise<void> {
    const flight = this.#flight;
    for (;;) {
      if (this.#position > this.#end) {
        this.push(null);
        return;
      }
      await flight.waitFor(this.#position, this.#abort.signal);
      const handle = flight.current;
      const wanted = Math.min(READ_CHUNK, this.#end - this.#position + 1, flight.frontier - this.#position);
      if (handle === undefined || wanted <= 0) continue;
      const buffer = Buffer.allocUnsafe(wanted);
      const read = await handle.read(buffer, 0, wanted, this.#position);
      if (this.destroyed) return;
      if (read === 0) {
        // The handle was swapped for a new generation between the wait and the read; look again shortly.
        await sleep(5);
        continue;
      }
      this.#position += read;
      this.push(read === wanted ? buffer : buffer.subarray(0, read));
      return;
    }
  }
}
