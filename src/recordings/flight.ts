/**
 * One recording as this process sees it while a download runs somewhere: the single-flight state every
 * request in the process shares. A flight knows the recording's size once the download's headers (or, for
 * a download in another process, its sidecar) arrive, tracks the frontier (bytes known to be on disk) and the
 * extents beyond it that seek-ahead slices put on disk, and wakes readers when either grows. Readers read the
 * partial file, except for the bytes the download appended since readers were last woken: those the flight
 * keeps (the upstream's own buffers, about one read chunk, four at most), so that readers woken at the frontier,
 * hundreds of them under a stampede, copy them at once instead of each queueing a read on libuv's thread pool
 * (which spread the first byte of a 200-client stampede over tens of milliseconds).
 */
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { createError, type RecgateError } from '../errors.js';
import { takeChunk } from '../io/chunks.js';
import { type CacheOutcome, cacheKeyOf, type RecordingRef } from './cache.js';
import {
  type FinalInfo,
  type PartialMeta,
  READ_CHUNK,
  type ReadHandle,
  type StoredEncryption,
} from './store/store.js';

export interface Identity {
  size: number;
  lastModified: Date;
  /** The upstream's ETag, to notice a recording that changed between two generations. */
  upstreamEtag: string | null;
}

export type FlightState = 'running' | 'complete' | 'failed';

/** See {@link Flight.onStall}. */
export type StallHandler = (position: number, end: number, first: boolean) => boolean;

/** How long a window of frontier samples the download rate is measured over, and the shortest one trusted. */
const RATE_WINDOW_MS = 2000;
const RATE_MIN_SPAN_MS = 500;

export class Flight {
  readonly ref: RecordingRef;
  /** Resolves once the size is known (readers may start), rejects when the flight fails first. */
  readonly ready: Promise<void>;

  #origin: CacheOutcome = 'miss';
  #state: FlightState = 'running';
  #error: RecgateError | undefined;
  #identity: Identity | undefined;
  /** Bytes `0..frontier-1` of {@link current} are on disk and final. */
  #frontier = 0;
  #current: ReadHandle | undefined;
  /** The sidecar of the generation {@link current} reads, once known (what slices are checked against). */
  #meta: PartialMeta | undefined;
  #finalEncryption: StoredEncryption | undefined;
  #stall: StallHandler | undefined;
  /** Open read streams; handles close when the flight is over and this drops to 0. */
  #readers = 0;
  /** Requests waiting for {@link ready}. */
  #waiting = 0;
  /** Aborted when the last waiting request leaves while the flight waits for admission. */
  #queue: AbortController | undefined;
  readonly #abort = new AbortController();
  readonly #handles = new Set<ReadHandle>();
  readonly #waiters = new Set<() => void>();
  /** The frontier readers were last woken for, and the timer that wakes them for a smaller advance. */
  #notifiedFrontier = 0;
  #batchTimer: NodeJS.Timeout | undefined;
  /** Sorted, disjoint `[start, end)` ranges of {@link current} beyond the frontier that slices put on disk. */
  #extents: Array<[number, number]> = [];
  /**
   * The download's latest appended chunks, `tailStart..tailEnd` of {@link current}, as it gave them to
   * {@link advance}: the bytes just written, for readers woken at the frontier (see {@link copyTail}).
   */
  #tail: Buffer[] = [];
  #tailStart = 0;
  /** Where the kept chunks end: the frontier, unless the frontier moved without a chunk since. */
  #tailEnd = 0;
  /** `[time, frontier]` samples for {@link rate}. */
  #samples: Array<[number, number]> = [];
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

  /** The cache key: the owner call SID, with the variant's suffix. */
  get id(): string {
    return cacheKeyOf(this.ref);
  }

  /** How this flight began: it downloads (`miss`), follows another process (`wait`), or found the file. */
  get origin(): CacheOutcome {
    return this.#origin;
  }

  get state(): FlightState {
    return this.#state;
  }

  /** Why the flight failed, once it has. */
  get error(): RecgateError | undefined {
    return this.#error;
  }

  get identity(): Identity | undefined {
    return this.#identity;
  }

  get frontier(): number {
    return this.#frontier;
  }

  /** The handle readers read: the generation being written, or the finished file. */
  get current(): ReadHandle | undefined {
    return this.#current;
  }

  get meta(): PartialMeta | undefined {
    return this.#meta;
  }

  /** How to open the bytes when they are kept encrypted (the generation's, or the finished file's). */
  get encryption(): StoredEncryption | undefined {
    return this.#meta?.encryption ?? this.#finalEncryption;
  }

  /** Aborted when the flight is cancelled (the cache closes); the download and its slices stop. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /**
   * Counts a request waiting for {@link ready}; returns what uncounts it (once it is ready, or it left).
   * When the count drops to 0 while the flight waits for admission, {@link enterQueue}'s signal aborts.
   */
  addWaiter(): () => void {
    this.#waiting++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#waiting--;
      if (this.#waiting === 0 && this.#identity === undefined) {
        this.#queue?.abort(createError('RECGATE_CLIENT_CLOSED'));
      }
    };
  }

  /**
   * The flight waits for admission: the signal aborts when no request waits for it (at once if none does).
   * Once readers were promised a size (a takeover of another process's download), they count as wanting it
   * and the signal never aborts.
   */
  enterQueue(): AbortSignal {
    this.#queue = new AbortController();
    if (this.#waiting === 0 && this.#identity === undefined) {
      this.#queue.abort(createError('RECGATE_CLIENT_CLOSED'));
    }
    return this.#queue.signal;
  }

  leaveQueue(): void {
    this.#queue = undefined;
  }

  /** Every request left while the flight waited for admission: it starts nothing and nobody may join it. */
  get abandoned(): boolean {
    return this.#queue?.signal.aborted ?? false;
  }

  setOrigin(origin: CacheOutcome): void {
    this.#origin = origin;
  }

  cancel(reason: RecgateError): void {
    this.#abort.abort(reason);
  }

  /**
   * Sets who hears of readers stalled beyond what is readable (the seek-ahead), or nobody. Called
   * synchronously, must not throw: `first` the first time for that position, then again on every re-check
   * while it stays stalled. Returns whether the reader should re-check on its own every so often (slices of
   * other processes wake nobody here).
   */
  onStall(handler: StallHandler | undefined): void {
    this.#stall = handler;
  }

  /** Records the size and dates; throws if a later generation disagrees with what readers were promised. */
  setIdentity(identity: Identity): void {
    const known = this.#identity;
    if (known === undefined) {
      this.#identity = identity;
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

  /**
   * Switches readers to `handle`, whose first `frontier` bytes are final; `meta` describes its generation
   * (kept when omitted: the finished file of the same generation).
   */
  adopt(handle: ReadHandle, frontier: number, meta?: PartialMeta): void {
    this.own(handle);
    // Extents are bytes of one generation; another file does not have them.
    if (this.#current?.fileId !== handle.fileId) this.#extents = [];
    // Kept bytes are the bytes of the handle they were written to (completing keeps the writer's handle).
    if (this.#current !== handle) this.#tail = [];
    this.#current = handle;
    if (meta !== undefined) this.#meta = meta;
    this.#frontier = frontier;
    this.#samples = [];
    this.#notify();
  }

  /**
   * Bytes up to `frontier` of {@link current} are on disk. `chunk`, when given, is the chunk that just ended
   * there, exactly as written: the flight keeps it for readers woken now (see {@link copyTail}).
   */
  advance(frontier: number, chunk?: Buffer): void {
    if (frontier === this.#frontier) return;
    this.#keepTail(frontier, chunk);
    this.#frontier = frontier;
    const now = performance.now();
    const last = this.#samples.at(-1);
    // A sample per 50 ms is plenty for a rate over seconds, and keeps the window small at any speed.
    if (last !== undefined && now - last[0] < 50) last[1] = frontier;
    else this.#samples.push([now, frontier]);
    while (this.#samples.length > 2 && now - this.#samples[1]![0] >= RATE_WINDOW_MS) this.#samples.shift();
    // Waking every reader for every upstream chunk (often 16 KiB) costs hundreds of thousands of wake-ups a
    // second under a stampede, and the garbage they make. The first bytes go out at once; after that readers
    // wake for a full read chunk, or within ADVANCE_BATCH_MS, whichever comes first.
    if (this.#notifiedFrontier === 0 || frontier - this.#notifiedFrontier >= READ_CHUNK) this.#notify();
    else this.#batchTimer ??= setTimeout(() => this.#notify(), ADVANCE_BATCH_MS).unref();
  }

  /**
   * Copies `[position, position + length)` of {@link current} into `into` from the chunks the download just
   * appended, when they hold all of it; returns whether they did (else the caller reads the file). Readers
   * woken at the frontier find their bytes here, so the wake-up of a stampede costs no thread-pool read each.
   */
  copyTail(into: Buffer, position: number, length: number): boolean {
    if (this.#tail.length === 0 || position < this.#tailStart || position + length > this.#tailEnd) {
      return false;
    }
    let at = this.#tailStart;
    let copied = 0;
    for (const chunk of this.#tail) {
      const end = at + chunk.length;
      if (end > position + copied) {
        const from = position + copied - at;
        copied += chunk.copy(into, copied, from, Math.min(chunk.length, from + length - copied));
        if (copied === length) return true;
      }
      at = end;
    }
    return false;
  }

  /**
   * Keeps `chunk`, which ends at `frontier`, and drops the oldest chunks the readers woken now cannot need:
   * those that end at or before the frontier readers were last woken for, as long as a read chunk's worth
   * stays (readers that just got their first bytes start at 0), and any beyond {@link MAX_TAIL_BYTES}. A
   * reader that needs bytes no longer kept reads the file.
   */
  #keepTail(frontier: number, chunk: Buffer | undefined): void {
    if (chunk === undefined || frontier - chunk.length !== this.#frontier) {
      this.#tail = [];
      return;
    }
    // Only a chunk that continues the kept ones exactly joins them.
    if (this.#tailEnd !== this.#frontier) this.#tail = [];
    const tail = this.#tail;
    if (tail.length === 0) this.#tailStart = this.#frontier;
    tail.push(chunk);
    this.#tailEnd = frontier;
    let bytes = frontier - this.#tailStart;
    for (;;) {
      const first = tail[0]!;
      const stale =
        this.#tailStart + first.length <= this.#notifiedFrontier && bytes - first.length >= READ_CHUNK;
      if (tail.length === 1 || !(stale || bytes > MAX_TAIL_BYTES)) break;
      tail.shift();
      this.#tailStart += first.length;
      bytes -= first.length;
    }
  }

  /**
   * The download's recent rate in bytes per second, or `undefined` until it has been watched long enough
   * (the first hundreds of milliseconds of a body say little about its steady rate).
   */
  rate(): number | undefined {
    const first = this.#samples[0];
    const last = this.#samples.at(-1);
    if (first === undefined || last === undefined) return undefined;
    const now = performance.now();
    const span = now - first[0];
    if (span < RATE_MIN_SPAN_MS) return undefined;
    // Measured up to now, not to the last sample, so a stalled download reads as slow.
    return ((last[1] - first[1]) * 1000) / span;
  }

  /** Records that bytes `[start, end)` of generation `fileId` are on disk beyond the frontier, and wakes readers. */
  addExtent(fileId: string, start: number, end: number): void {
    if (this.#current?.fileId !== fileId || end <= start || end <= this.#frontier) return;
    const merged: Array<[number, number]> = [];
    let next: [number, number] = [start, end];
    for (const extent of this.#extents) {
      if (extent[1] < next[0] || extent[0] > next[1]) merged.push(extent);
      else next = [Math.min(extent[0], next[0]), Math.max(extent[1], next[1])];
    }
    merged.push(next);
    merged.sort((a, b) => a[0] - b[0]);
    this.#extents = merged;
    this.#notify();
  }

  /** Forgets every slice extent (their validators did not hold); readers wait for the frontier instead. */
  clearExtents(): void {
    this.#extents = [];
    this.#notify();
  }

  /** The slice extents now, for tests and decisions. */
  get extents(): ReadonlyArray<readonly [number, number]> {
    return this.#extents;
  }

  /** End (exclusive) of the bytes readable now from `position` on; `position` itself when it is not readable. */
  readableEnd(position: number): number {
    if (this.#current === undefined) return position;
    if (this.#state === 'complete') return this.#identity!.size;
    let reach = Math.max(position, this.#frontier);
    for (const [start, end] of this.#extents) {
      if (start <= reach && end > reach) reach = end;
    }
    return reach;
  }

  /**
   * Resolves at the next change (frontier, extents, state) or when `timeoutMs` (if given) passes; rejects
   * when `signal` aborts.
   */
  async changed(signal: AbortSignal, timeoutMs?: number): Promise<void> {
    if (signal.aborted) throw signal.reason;
    await new Promise<void>((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => wake(), timeoutMs);
      const onAbort = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        reject(signal.reason);
      };
      const wake = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Calls `wake` once, at the next change, unless {@link offNextChange} takes it back first. The cheap form
   * of {@link changed} for a reader that cancels its own waits: it registers the same function every time,
   * so a wait allocates nothing (no promise, abort listener or closure per wake-up, which under a stampede is
   * hundreds of readers on every advance, and live long enough to be promoted to the old generation).
   */
  onNextChange(wake: () => void): void {
    this.#waiters.add(wake);
  }

  /** Unregisters a `wake` given to {@link onNextChange} that has not been called. */
  offNextChange(wake: () => void): void {
    this.#waiters.delete(wake);
  }

  /** Wakes readers, for example after the seek-ahead gave up on a slice they waited for. */
  wake(): void {
    this.#notify();
  }

  /** Every byte is under the final name; `handle` reads it (the same file, or the partial it was renamed from). */
  complete(final: FinalInfo, handle: ReadHandle): void {
    if (this.#state !== 'running') return;
    this.#finalEncryption = final.identity?.encryption;
    // Throws if the finished file is not the size readers were promised.
    this.setIdentity({ size: final.size, lastModified: final.mtime, upstreamEtag: null });
    this.adopt(handle, final.size);
    this.#state = 'complete';
    this.#notify();
  }

  fail(err: RecgateError): void {
    if (this.#state !== 'running') return;
    this.#state = 'failed';
    this.#error = err;
    this.#tail = [];
    this.#rejectReady(err);
    this.#notify();
  }

  createReadStream(start: number, end: number): Readable {
    return new FlightReadStream(this, start, end);
  }

  /** A reader is stalled at `position` of a range ending at `end`; see {@link onStall}. */
  stalled(position: number, end: number, first: boolean): boolean {
    if (this.#state !== 'running') return false;
    return this.#stall?.(position, end, first) ?? false;
  }

  /** Counts a read stream; handles stay open while any reads. */
  attachReader(): void {
    this.#readers++;
  }

  detachReader(): void {
    this.#readers--;
    void this.dispose();
  }

  /** Closes the handles once the flight is over and no stream reads them. */
  async dispose(): Promise<void> {
    if (this.#state === 'running' || this.#readers > 0) return;
    const handles = [...this.#handles];
    this.#handles.clear();
    this.#current = undefined;
    this.#tail = [];
    await Promise.all(handles.map((h) => h.close()));
  }

  #notify(): void {
    if (this.#batchTimer !== undefined) {
      clearTimeout(this.#batchTimer);
      this.#batchTimer = undefined;
    }
    this.#notifiedFrontier = this.#frontier;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}

/**
 * Streams a byte range of a flight: reads what is on disk, then waits for the frontier to move. One read of
 * at most {@link READ_CHUNK} per `_read`, so memory stays bounded by the stream's high-water mark and a slow
 * client only slows its own reads.
 *
 * A wait allocates nothing: the stream registers its own {@link #wake} with the flight and returns, and the
 * wake-up starts the next read. Under a stampede hundreds of readers wait on every advance; a promise and
 * closures per wait lived across young-generation collections and were promoted, growing the old generation
 * by tens of megabytes of garbage per cold download before a full collection (`npm run bench:memory`).
 */
class FlightReadStream extends Readable {
  readonly #flight: Flight;
  readonly #end: number;
  #position: number;
  #stalledAt = -1;
  #released = false;
  /** Registered with the flight, waiting for its next change. */
  #waiting = false;
  /** Ends a wait that asked to re-check on its own. */
  #recheckTimer: NodeJS.Timeout | undefined;
  /** The flight changed (or the re-check time passed): read again, as the resolution of a wait would. */
  readonly #wake = (): void => {
    if (!this.#waiting) return;
    this.#stopWaiting();
    queueMicrotask(this.#next);
  };
  readonly #recheck = (): void => {
    this.#recheckTimer = undefined;
    this.#wake();
  };
  readonly #next = (): void => {
    try {
      this.#readNext();
    } catch (err) {
      this.#fail(err);
    }
  };
  readonly #fail = (err: unknown): void => {
    this.destroy(err as Error);
  };
  /** The read in progress: its buffer and the bytes asked for. */
  #buffer: Buffer | undefined;
  #wanted = 0;
  readonly #afterRead = (read: number): void => {
    const buffer = this.#buffer!;
    this.#buffer = undefined;
    if (this.destroyed) return;
    if (read === 0) {
      // The handle was swapped for a new generation between the wait and the read; look again shortly.
      setTimeout(this.#next, 5);
      return;
    }
    this.#position += read;
    this.push(read === this.#wanted ? buffer : buffer.subarray(0, read));
  };

  constructor(flight: Flight, start: number, end: number) {
    super({ highWaterMark: READ_CHUNK });
    this.#flight = flight;
    this.#position = start;
    this.#end = end;
    flight.attachReader();
  }

  override _read(): void {
    this.#next();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.#waiting) this.#stopWaiting();
    if (!this.#released) {
      this.#released = true;
      this.#flight.detachReader();
    }
    callback(err);
  }

  /** Reads again at the flight's next change, or after `timeoutMs`; nothing once the stream is destroyed. */
  #waitForChange(timeoutMs: number | undefined): void {
    if (this.destroyed) return;
    this.#waiting = true;
    this.#flight.onNextChange(this.#wake);
    if (timeoutMs !== undefined) this.#recheckTimer = setTimeout(this.#recheck, timeoutMs);
  }

  #stopWaiting(): void {
    this.#waiting = false;
    this.#flight.offNextChange(this.#wake);
    clearTimeout(this.#recheckTimer);
    this.#recheckTimer = undefined;
  }

  /**
   * Pushes the next chunk, or the end, or waits for the flight to change. Callbacks rather than an async
   * function: no generator and promises per chunk, which, like the waits, lived long enough under a stampede
   * to be promoted.
   */
  #readNext(): void {
    if (this.destroyed) return;
    const flight = this.#flight;
    if (this.#position > this.#end) {
      this.push(null);
      return;
    }
    if (flight.state === 'failed') {
      this.#fail(flight.error!);
      return;
    }
    const readable = flight.readableEnd(this.#position);
    const handle = flight.current;
    const wanted = Math.min(READ_CHUNK, this.#end - this.#position + 1, readable - this.#position);
    if (handle === undefined || wanted <= 0) {
      const recheck = flight.stalled(this.#position, this.#end, this.#stalledAt !== this.#position);
      this.#stalledAt = this.#position;
      // Slices of other processes show up only in the block map, so a reader far ahead also looks again
      // every so often without being woken.
      this.#waitForChange(recheck ? STALL_RECHECK_MS : undefined);
      return;
    }
    this.#buffer = takeChunk(wanted);
    this.#wanted = wanted;
    if (flight.copyTail(this.#buffer, this.#position, wanted)) this.#afterRead(wanted);
    else handle.read(this.#buffer, 0, wanted, this.#position).then(this.#afterRead, this.#fail);
  }
}

/**
 * Most bytes a flight keeps of what the download just appended. Readers woken together need at most a read
 * chunk beyond the frontier they were last woken for, plus the upstream chunk that crossed it; this caps
 * what an upstream sending larger chunks could make it keep.
 */
const MAX_TAIL_BYTES = 4 * READ_CHUNK;

/** Longest a reader waits to hear of an advance smaller than a read chunk. */
const ADVANCE_BATCH_MS = 5;

/** How often a reader waiting beyond the frontier re-checks without being woken. */
const STALL_RECHECK_MS = 50;
