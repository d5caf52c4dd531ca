/**
 * Seek-ahead: a reader that asks for bytes far beyond the running download's frontier gets them from a
 * slice, a ranged upstream request of its own, instead of waiting for the single full download to get there.
 *
 * - **When.** A reader stalls at `position`, and the download would need longer than `windowMs` to reach it
 *   at its measured rate (before a rate is measured, at `assumedBytesPerSecond`), and never for less than
 *   `minDistanceBytes`. An `open()` that names the start it will read (`OpenOptions.readStart`) lets the
 *   first slice of a cold recording go out together with the download instead of after its headers.
 * - **What.** From the block holding `position` (blocks of `blockBytes`) to the end of the reader's range,
 *   at most `maxSliceBytes`, cut where bytes already on disk or another slice begin.
 * - **Where to.** Into the partial file at its own offset (the download later writes the same bytes there
 *   again), while every reader of the process waiting on the region reads it from disk as it lands. The
 *   ranges go into the generation's block map (`store.appendBlockMap`), from which readers in other
 *   processes, and a later holder, learn they are present.
 * - **Bounds.** Every slice first appends a `claim` to the block map; claims are granted in file order while
 *   their total stays within `maxFraction` of the recording, so every process agrees which claims hold and
 *   slices of all processes together fetch at most that much. A process runs at most
 *   `maxConcurrentPerRecording` slices of one recording and `maxConcurrentPerProcess` in all. A reader that
 *   gets no slice waits for the download, as without seek-ahead. Slices belong to a download that was
 *   admitted (`admission/`) and take no admission slot of their own: they are bounded here, per recording
 *   and per process, and a slice that had to queue behind other recordings' downloads would come too late
 *   to help a seek. They still pass the upstream breaker, as every upstream request does.
 * - **Correctness.** Only an upstream that announced ranges (`acceptsRanges`) with an ETag and a size is
 *   sliced. A slice must come back `206` from the requested offset with the download's ETag, Last-Modified
 *   and total size; a `200` (Range ignored) ends seek-ahead for the recording (`no_range`), other mismatches
 *   end it too (`validator_mismatch`): an `off` record voids the block map in every process and readers go
 *   back to waiting for the download.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { MediaResponse, Upstream } from '../upstream/upstream.js';
import type { CacheEventBody, EmitEvent } from './events.js';
import type { Flight } from './flight.js';
import {
  headerOf,
  NO_EARLY_TOKEN,
  room,
  type Slice,
  type SliceableMeta,
  type SliceBudget,
  type SliceCoordinator,
  SliceRun,
  sameHeader,
  sliceable,
  type Tally,
  tally,
} from './slice-run.js';
import type { BlockMap, BlockRecord, PartialMeta, RecordingStore } from './store/store.js';

export interface SeekAheadOptions {
  /** Whether far seeks fetch slices at all. @default true */
  enabled?: boolean;
  /** Slices start on multiples of this. @default 262144 (256 KiB) */
  blockBytes?: number;
  /** A seek is far when the download needs longer than this to reach it at its measured rate. @default 1000 */
  windowMs?: number;
  /** A seek closer to the frontier than this never fetches a slice. @default 262144 (256 KiB) */
  minDistanceBytes?: number;
  /**
   * Download rate assumed until one is measured (the first half second of a body says little about it), so
   * a cold seek further than `windowMs` at this rate fetches a slice at once. @default 4194304 (4 MiB/s)
   */
  assumedBytesPerSecond?: number;
  /** Longest slice. @default 4194304 (4 MiB) */
  maxSliceBytes?: number;
  /** Slice bytes of one recording, all processes together, as a fraction of its size. @default 0.1 */
  maxFraction?: number;
  /** Slices of one recording this process fetches at once. @default 2 */
  maxConcurrentPerRecording?: number;
  /** Slices this cache (one per worker process) fetches at once over all recordings. @default 8 */
  maxConcurrentPerProcess?: number;
}

export type SeekAheadSettings = Required<SeekAheadOptions>;

export const SEEK_AHEAD_DEFAULTS: SeekAheadSettings = {
  enabled: true,
  blockBytes: 256 * 1024,
  windowMs: 1000,
  minDistanceBytes: 256 * 1024,
  assumedBytesPerSecond: 4 * 1024 * 1024,
  maxSliceBytes: 4 * 1024 * 1024,
  maxFraction: 0.1,
  maxConcurrentPerRecording: 2,
  maxConcurrentPerProcess: 8,
};

/** Validates seek-ahead options where they enter; throws TypeError naming the bad field. */
export function seekAheadSettings(options: SeekAheadOptions | false | undefined): SeekAheadSettings {
  if (options === false) return { ...SEEK_AHEAD_DEFAULTS, enabled: false };
  if (options === undefined) return { ...SEEK_AHEAD_DEFAULTS };
  if (typeof options !== 'object' || options === null) {
    throw new TypeError('options.seekAhead must be an object or false');
  }
  const settings = { ...SEEK_AHEAD_DEFAULTS };
  if (options.enabled !== undefined) {
    if (typeof options.enabled !== 'boolean')
      throw new TypeError('options.seekAhead.enabled must be a boolean');
    settings.enabled = options.enabled;
  }
  const integers = [
    'blockBytes',
    'windowMs',
    'minDistanceBytes',
    'assumedBytesPerSecond',
    'maxSliceBytes',
    'maxConcurrentPerRecording',
    'maxConcurrentPerProcess',
  ] as const;
  for (const name of integers) {
    const value = options[name];
    if (value === undefined) continue;
    const min = name === 'windowMs' || name === 'minDistanceBytes' ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < min) {
      throw new TypeError(`options.seekAhead.${name} must be an integer >= ${min}`);
    }
    settings[name] = value;
  }
  if (options.maxFraction !== undefined) {
    const f = options.maxFraction;
    if (typeof f !== 'number' || !(f >= 0 && f <= 1)) {
      throw new TypeError('options.seekAhead.maxFraction must be a number from 0 to 1');
    }
    settings.maxFraction = f;
  }
  if (settings.maxSliceBytes < settings.blockBytes) {
    throw new TypeError('options.seekAhead.maxSliceBytes must be at least options.seekAhead.blockBytes');
  }
  return settings;
}

/** What all seek-aheads of one cache share: the settings and the count of slices running. */
export class SeekAheadPool {
  readonly settings: SeekAheadSettings;
  active = 0;

  constructor(settings: SeekAheadSettings) {
    this.settings = settings;
  }
}

/** What a discarded slice's event says beyond its reason. */
type DiscardFields = Omit<Extract<CacheEventBody, { event: 'seek_ahead_discarded' }>, 'event' | 'reason'>;

export interface SeekAheadDeps {
  flight: Flight;
  store: RecordingStore;
  upstream: Pick<Upstream, 'fetchMedia'>;
  pool: SeekAheadPool;
  pollIntervalMs: number;
  log: Logger;
  event: EmitEvent;
}

/** The seek-ahead of one flight. */
export class SeekAhead {
  readonly #d: SeekAheadDeps;
  readonly #s: SeekAheadSettings;
  readonly #slices = new Set<Slice>();
  /** Block starts another process fetches now (its range lock is held), with when to look again. */
  readonly #busy = new Map<number, number>();
  /** Asks that hit a concurrency cap: `[position, end]`. */
  #deferred: Array<[number, number]> = [];
  /** The partial generation the state below is about. */
  #generation: string | undefined;
  #off: string | undefined;
  /** Granted slice claims per the block map, all processes. */
  #claimed: Tally = { regular: 0, early: undefined };
  #mapReading = false;
  #mapReadAt = Number.NEGATIVE_INFINITY;
  #earlyStart: number | undefined;
  #earlyLaunched = false;
  /** This process downloads and its generation exists: an early slice is too late now. */
  #earlyClosed = false;
  #downloadStarted = false;
  #stopped = false;

  constructor(deps: SeekAheadDeps) {
    this.#d = deps;
    this.#s = deps.pool.settings;
  }

  /**
   * A reader asks for `position` (of a range ending at `end`) and it is not readable: decide now, from what is
   * known now, whether a slice fetches it. Asked once per position, so a rate measured later does not turn
   * a reader that chose to wait into a slice; an ask that only hit a concurrency cap is retried when a slice
   * ends. Never throws.
   */
  consider(position: number, end: number): boolean {
    if (!this.#eligible(position)) return this.#watching(position);
    // Another process may have the bytes already, or be fetching them: read its records first.
    this.#refresh(() => {
      if (this.#decide(position, end) === 'capped' && this.#deferred.length < MAX_DEFERRED) {
        this.#deferred.push([position, end]);
      }
    });
    return true;
  }

  /**
   * A reader is still stalled at `position`: take in other processes' slices (at most once per poll
   * interval) and retry asks that hit a cap. Resolves whether the reader should keep looking on its own.
   */
  poll(position: number): boolean {
    if (!this.#watching(position)) return false;
    this.#refresh(() => this.#retryDeferred());
    return true;
  }

  /** Whether slices may still bring `position` before the download does: worth watching the block map. */
  #watching(position: number): boolean {
    const flight = this.#d.flight;
    if (!this.#s.enabled || this.#stopped || flight.state !== 'running') return false;
    const meta = flight.meta;
    if (!sliceable(meta) || flight.current?.fileId !== meta.fileId) return false;
    this.#sync(meta);
    return this.#off === undefined && position - flight.frontier > this.#s.minDistanceBytes;
  }

  #refresh(then: () => void): void {
    const now = performance.now();
    if (this.#mapReading || now - this.#mapReadAt < this.#d.pollIntervalMs) {
      then();
      return;
    }
    this.#mapReading = true;
    this.#mapReadAt = now;
    this.#readMap()
      .catch((err: unknown) => this.#d.log.debug({ err }, 'Reading the block map failed'))
      .finally(() => {
        this.#mapReading = false;
        then();
      });
  }

  /** Retries asks that hit a cap, now that a slice ended. */
  #retryDeferred(): void {
    const asks = this.#deferred.splice(0);
    for (const [position, end] of asks) {
      if (!this.#eligible(position)) continue;
      if (this.#decide(position, end) === 'capped') this.#deferred.push([position, end]);
    }
  }

  /** `open()` was told the caller will read from `start`: a far start on a cold recording may go out at once. */
  hint(start: number): void {
    const flight = this.#d.flight;
    if (
      !this.#s.enabled ||
      this.#stopped ||
      this.#earlyClosed ||
      flight.identity !== undefined ||
      this.#earlyStart !== undefined
    )
      return;
    if (start < Math.max(this.#s.minDistanceBytes, this.#coldThreshold())) return;
    this.#earlyStart = start;
    if (this.#downloadStarted) this.#launchEarly();
  }

  /** The download's own request goes out now: an early slice may go with it. */
  downloadStarting(): void {
    this.#downloadStarted = true;
    if (this.#earlyStart !== undefined) this.#launchEarly();
  }

  /**
   * This process's download created generation `meta`, not yet shown to readers: no early slice starts from
   * now on, and when none went out, the block map says so at once, so that other processes' slices may use
   * the block of the budget kept for one. Never throws.
   */
  async generationStarted(meta: PartialMeta): Promise<void> {
    this.#earlyClosed = true;
    if (!this.#s.enabled || this.#stopped || this.#earlyLaunched || !sliceable(meta)) return;
    // No seek into a recording this short is ever far (see `#threshold`): no slice of this process will claim
    // any budget, so the block map, one more file for every short call, is not made. (A process set to slice
    // recordings this short still may: its first claim makes the map, and without this stand-in its claims
    // leave aside the block kept for an early slice.)
    if (meta.size <= this.#s.minDistanceBytes) return;
    // One byte long: block maps hold no empty ranges. It counts against the budget like any claim.
    const none: BlockRecord = { t: 'claim', token: NO_EARLY_TOKEN, start: 0, end: 1 };
    await this.#d.store
      .appendBlockMap(this.#d.flight.id, headerOf(meta), [none])
      .catch((err: unknown) => this.#d.log.debug({ err }, 'Could not record that no early slice went out'));
  }

  /** Stops every slice of this flight and waits for them (before the commit, and when the flight ends). */
  async stop(): Promise<void> {
    this.#stopped = true;
    const slices = [...this.#slices];
    for (const slice of slices) slice.abort.abort(new Error('seek-ahead stopped'));
    await Promise.allSettled(slices.map((s) => s.done));
  }

  #coldThreshold(): number {
    return (this.#s.assumedBytesPerSecond * this.#s.windowMs) / 1000;
  }

  #threshold(): number {
    const rate = this.#d.flight.rate() ?? this.#s.assumedBytesPerSecond;
    return Math.max(this.#s.minDistanceBytes, (rate * this.#s.windowMs) / 1000);
  }

  /** Cheap checks shared by every decision; also resets the state when the flight moved to a new generation. */
  #eligible(position: number): boolean {
    const flight = this.#d.flight;
    if (!this.#s.enabled || this.#stopped || flight.state !== 'running') return false;
    const meta = flight.meta;
    if (!sliceable(meta) || flight.identity === undefined || flight.current?.fileId !== meta.fileId)
      return false;
    this.#sync(meta);
    if (this.#off !== undefined) return false;
    if (position - flight.frontier <= this.#threshold()) return false;
    if (flight.readableEnd(position) > position) return false;
    for (const slice of this.#slices) if (slice.start <= position && position < slice.stop) return false;
    return true;
  }

  /** Starts over when the flight moved to another partial generation: its block map is another one. */
  #sync(meta: SliceableMeta): void {
    if (this.#generation === meta.fileId) return;
    this.#generation = meta.fileId;
    this.#off = undefined;
    this.#claimed = { regular: 0, early: undefined };
    this.#busy.clear();
  }

  /** The recording's slice budget, a block of it kept for the early slice (see `granted` in slice-run.ts). */
  #budget(size: number): SliceBudget {
    const total = Math.floor(size * this.#s.maxFraction);
    return { total, reserve: Math.min(total, this.#s.blockBytes) };
  }

  #decide(position: number, end: number): 'started' | 'capped' | 'no' {
    if (!this.#eligible(position)) return 'no';
    const flight = this.#d.flight;
    const size = flight.identity!.size;
    if (this.#slices.size >= this.#s.maxConcurrentPerRecording) return 'capped';
    if (this.#d.pool.active >= this.#s.maxConcurrentPerProcess) return 'capped';
    const block = this.#s.blockBytes;
    const blockStart = Math.floor(position / block) * block;
    const retryAt = this.#busy.get(blockStart);
    if (retryAt !== undefined && performance.now() < retryAt) return 'capped';
    // Bytes of the first block that are already readable need not come again.
    const start = flight.readableEnd(Math.max(blockStart, flight.frontier));
    let stop = Math.min(
      size,
      Math.max(Math.ceil((end + 1) / block) * block, blockStart + block),
      blockStart + this.#s.maxSliceBytes,
    );
    for (const [s] of flight.extents) if (s > start && s < stop) stop = s;
    for (const slice of this.#slices) if (slice.start > start && slice.start < stop) stop = slice.start;
    stop = Math.min(stop, start + room(this.#claimed, this.#budget(size)));
    if (stop <= position || start > position) return 'no';
    this.#d.log.debug(
      { event: 'seek_ahead_start', offset: start, end: stop, frontier: flight.frontier, rate: flight.rate() },
      'Fetching a slice ahead of the download',
    );
    this.#launch({ start, stop, abort: new AbortController(), done: Promise.resolve() }, undefined);
    return 'started';
  }

  #launchEarly(): void {
    const start = this.#earlyStart;
    if (start === undefined || this.#earlyLaunched || this.#stopped) return;
    if (this.#d.flight.identity !== undefined) return;
    if (this.#d.pool.active >= this.#s.maxConcurrentPerProcess) return;
    this.#earlyLaunched = true;
    const blockStart = Math.floor(start / this.#s.blockBytes) * this.#s.blockBytes;
    // Until the size is known, one block: small against the budget of any recording this far-seekable.
    const slice: Slice = {
      start: blockStart,
      stop: blockStart + this.#s.blockBytes,
      abort: new AbortController(),
      done: Promise.resolve(),
    };
    const response = this.#d.upstream.fetchMedia(this.#d.flight.ref.recordingSid, {
      signal: slice.abort.signal,
      start: slice.start,
      end: slice.stop - 1,
      variant: this.#d.flight.ref.variant,
      account: this.#d.flight.ref.account,
    });
    // A 200 is the whole recording (the upstream ignores Range): no use as a slice, so its body stops at once
    // rather than pile up while the download's headers are awaited.
    response.then(
      (r) => {
        if (r.status !== 206) r.body.destroy();
      },
      () => undefined,
    );
    this.#launch(slice, response);
  }

  #launch(slice: Slice, early: Promise<MediaResponse> | undefined): void {
    const flight = this.#d.flight;
    const onFlightAbort = () => slice.abort.abort(flight.signal.reason);
    flight.signal.addEventListener('abort', onFlightAbort, { once: true });
    this.#slices.add(slice);
    this.#d.pool.active++;
    slice.done = this.#fetch(slice, early)
      .catch((err: unknown) => this.#d.log.warn({ err }, 'Seek-ahead slice failed'))
      .finally(() => {
        flight.signal.removeEventListener('abort', onFlightAbort);
        this.#slices.delete(slice);
        this.#d.pool.active--;
        // Readers that waited for this slice look again: the download, or another slice, serves them.
        flight.wake();
        if (!this.#stopped) this.#retryDeferred();
      });
  }

  /** What a slice run may ask of the seek-ahead it belongs to. */
  readonly #coordinator: SliceCoordinator = {
    off: () => this.#off,
    noRanges: () => {
      this.#off = 'no_range';
    },
    sync: (meta) => this.#sync(meta),
    validate: (response, slice, meta) => this.#validate(response, slice, meta),
    busy: (start) =>
      this.#busy.set(
        Math.floor(start / this.#s.blockBytes) * this.#s.blockBytes,
        performance.now() + 20 * this.#d.pollIntervalMs,
      ),
    apply: (map, meta) => this.#apply(map, meta),
    budget: (size) => this.#budget(size),
  };

  #fetch(slice: Slice, early: Promise<MediaResponse> | undefined): Promise<void> {
    return new SliceRun(this.#d, this.#coordinator, slice, early).run();
  }

  /** Checks a slice's response against the download's validators; on a mismatch, ends seek-ahead. */
  async #validate(response: MediaResponse, slice: Slice, meta: SliceableMeta): Promise<boolean> {
    let reason: string | undefined;
    if (response.status !== 206) reason = 'no_range';
    else if (
      response.start !== slice.start ||
      response.totalSize !== meta.size ||
      response.etag !== meta.etag ||
      (response.lastModified !== null &&
        meta.lastModified !== null &&
        response.lastModified !== meta.lastModified)
    ) {
      reason = 'validator_mismatch';
    }
    if (reason === undefined) return true;
    response.body.destroy();
    await this.#discard(reason, meta, {
      offset: slice.start,
      bytes: 0,
      status: response.status,
      etag: response.etag,
      expectedEtag: meta.etag,
    });
    return false;
  }

  /** Ends seek-ahead for this generation, in every process: the block map's slices are void from now on. */
  async #discard(reason: string, meta: SliceableMeta, fields: DiscardFields): Promise<void> {
    const first = this.#off === undefined;
    this.#off = reason;
    this.#d.flight.clearExtents();
    for (const slice of this.#slices) slice.abort.abort(new Error(`seek-ahead off: ${reason}`));
    // Recorded first, so that other processes know by the time anyone hears of it.
    await this.#d.store
      .appendBlockMap(this.#d.flight.id, headerOf(meta), [{ t: 'off', reason }])
      .catch((err: unknown) => this.#d.log.warn({ err }, 'Could not record that seek-ahead is off'));
    if (first) {
      this.#d.event(
        { event: 'seek_ahead_discarded', reason, ...fields },
        reason === 'no_range'
          ? 'The upstream ignored Range; waiting for the download'
          : 'A slice did not match the download; discarding slices',
        'warn',
      );
    }
  }

  async #readMap(): Promise<void> {
    const meta = this.#d.flight.meta;
    if (!sliceable(meta)) return;
    this.#apply(await this.#d.store.readBlockMap(this.#d.flight.id, meta.fileId), meta);
  }

  /** Takes in what the block map says: slices of every process on disk, the budget spent, or `off`. */
  #apply(map: BlockMap | undefined, meta: SliceableMeta): void {
    if (map === undefined || !sameHeader(map.header, headerOf(meta))) return;
    const flight = this.#d.flight;
    if (this.#generation !== meta.fileId) return;
    const off = map.records.find((r) => r.t === 'off');
    if (off !== undefined) {
      if (this.#off === undefined) {
        this.#off = off.reason;
        flight.clearExtents();
        for (const slice of this.#slices) slice.abort.abort(new Error(`seek-ahead off: ${off.reason}`));
      }
      return;
    }
    for (const record of map.records) {
      if (record.t !== 'have') continue;
      flight.addExtent(meta.fileId, record.start, record.end);
      this.#busy.delete(Math.floor(record.start / this.#s.blockBytes) * this.#s.blockBytes);
    }
    // Reads may overlap and the block map only grows: the larger tally is the later one.
    const now = tally(map.records, this.#budget(meta.size));
    this.#claimed = {
      regular: Math.max(this.#claimed.regular, now.regular),
      early: now.early ?? this.#claimed.early,
    };
  }
}

/** Asks kept for a retry when slices of the flight are all busy; more just wait for the download. */
const MAX_DEFERRED = 64;
