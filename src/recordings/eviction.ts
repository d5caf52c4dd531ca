/**
 * Bounded disk: keeps the recordings under `--cache-max-bytes`, the volume above `--cache-min-free`, and no
 * recording nobody played for `--cache-max-age`, by removing the least recently played finished files.
 *
 * What is on disk is known from the {@link CacheIndex} in the call log's database, never from a directory
 * scan: the evictor records each committed download (`recording_saved`), moves a recording's last play
 * forward on each play (`cache_hit`, `available_while_waiting`; batched, so a hot recording writes once
 * per `touchIntervalMs`; the same flush adds to the play counters of `recgate stats`: a hit per `cache_hit`,
 * a download per `cache_miss`), and deletes the row of each file it removes and of each file the cache removed
 * (`recording_removed`: a purge, or a recording deleted upstream). An empty index beside a directory
 * that holds recordings (an upgrade) is filled once, in the background.
 *
 * An eviction pass runs after a commit, after a download refused with RECGATE_STORAGE_FULL, every
 * `checkIntervalMs` (for min-free and max-age), and never
 * twice at once across processes and hosts: it holds the lock {@link EVICTION_LOCK_ID} of the download
 * lock backend, taken with `tryLock` (a process that finds it busy tries again shortly, so a commit that
 * lands just as another pass ends is not forgotten). The pass walks the index from the least recently
 * played row, O(log n) a step, and for each file:
 * - takes the recording's own download lock with `tryLock`, skipping the file when it is busy: a download
 *   (or another evictor) holds it, so no file is removed while it is downloaded, and no host removes a file
 *   twice;
 * - reads the row again under that lock and skips it when it was played (or removed) since;
 * - removes the file, then the row.
 * A file being served is removed only from the directory: open descriptors keep its bytes to the end (see
 * `store/final-files.ts`: this process retires its descriptor for a grace period, the others stop serving
 * it within their revalidation time), and a request that starts afterwards downloads the recording again.
 */
import type { Logger } from 'pino';
import { describeSize, resolveSize, type SizeSetting } from '../config/units.js';
import type { CachedFile, CacheIndex, CacheTotals, OldestCursor } from './cache-index/cache-index.js';
import type { CacheEvent } from './events.js';
import type { Locker } from './lock/lock.js';
import type { RecordingStore } from './store/store.js';

/** The lock id that makes one eviction pass run at a time; no call SID has this form. */
export const EVICTION_LOCK_ID = 'recgate-eviction';

/** Why a file was evicted, as the metric's `reason` label says it. */
export type EvictionReason = 'max_bytes' | 'min_free' | 'max_age';

/** Rows read from the index per step of a pass. */
const BATCH = 16;
/** How long filling an empty index waits for the eviction lock. */
const BACKFILL_WAIT_MS = 60_000;
/** How soon a process that found the eviction lock busy tries again. */
const RETRY_MS = 500;

export interface EvictionLimits {
  /** Most bytes of finished recordings. */
  maxBytes?: SizeSetting | undefined;
  /** Free space to keep on the volume. */
  minFree?: SizeSetting | undefined;
  /** Evict recordings not played for this long, ms. */
  maxAgeMs?: number | undefined;
}

export interface EvictorOptions {
  index: CacheIndex;
  store: RecordingStore;
  locker: Locker;
  logger: Logger;
  limits: EvictionLimits;
  /** How often buffered plays are written to the index. @default 5000 */
  touchIntervalMs?: number;
  /** How often a pass runs without a commit asking for one (min-free, max-age). @default 60000 */
  checkIntervalMs?: number;
  /** Told of each eviction. @default none */
  onEvicted?: (reason: EvictionReason, bytes: number) => void;
  /** Told of the index's totals after each pass and check. @default none */
  onTotals?: (totals: CacheTotals) => void;
  /** The clock, epoch ms (tests move it for max-age). @default Date.now */
  now?: () => number;
}

export interface EvictionResult {
  /** Files removed. */
  evicted: number;
  /** Bytes removed. */
  bytes: number;
  /** Files skipped because a download or another evictor held their lock, or they were played meanwhile. */
  skipped: number;
  /** Whether this process ran the pass (`false`: another process held the eviction lock). */
  ran: boolean;
}

export class Evictor {
  readonly #o: Required<Omit<EvictorOptions, 'onEvicted' | 'onTotals'>> &
    Pick<EvictorOptions, 'onEvicted' | 'onTotals'>;
  /** Plays not yet written to the index: call SID to the latest play. */
  #plays = new Map<string, number>();
  /** Plays a finished file served (`cache_hit`) since the last flush, per call SID; and downloads started. */
  #hits = new Map<string, number>();
  #downloads = 0;
  #pass: Promise<EvictionResult> | undefined;
  #again = false;
  #timers: NodeJS.Timeout[] = [];
  #retry: NodeJS.Timeout | undefined;
  readonly #background = new Set<Promise<void>>();
  #closed = false;

  constructor(options: EvictorOptions) {
    for (const name of ['touchIntervalMs', 'checkIntervalMs'] as const) {
      const v = options[name];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) {
        throw new TypeError(`options.${name} must be a positive integer`);
      }
    }
    this.#o = {
      touchIntervalMs: 5000,
      checkIntervalMs: 60_000,
      now: Date.now,
      ...options,
    };
  }

  /** Whether any limit is set (without one, the evictor only keeps the index in step). */
  get bounded(): boolean {
    const { maxBytes, minFree, maxAgeMs } = this.#o.limits;
    return maxBytes !== undefined || minFree !== undefined || maxAgeMs !== undefined;
  }

  /**
   * Starts the timers and, when the index is empty while recordings are on disk, fills it in the
   * background. Resolves once the totals are read (O(1)), not after the filling.
   */
  async start(): Promise<CacheTotals> {
    const totals = await this.#o.index.totals();
    this.#o.onTotals?.(totals);
    // The fill asks for a pass when it is done; a pass before it would see an empty index.
    if (totals.files === 0) this.#run(() => this.backfill());
    else if (this.bounded) this.request();
    const { touchIntervalMs, checkIntervalMs } = this.#o;
    this.#timers.push(setInterval(() => this.#run(() => this.flush()), touchIntervalMs).unref());
    this.#timers.push(
      setInterval(() => {
        // Other processes' commits and passes change the totals too; the gauges catch up here.
        this.#run(async () => this.#o.onTotals?.(await this.#o.index.totals()));
        this.request();
      }, checkIntervalMs).unref(),
    );
    return totals;
  }

  /** Feeds the evictor the cache's events (wire it to the cache's `onEvent`). Never throws. */
  observe(event: CacheEvent): void {
    if (this.#closed) return;
    if (event.event === 'recording_saved') {
      const at = this.#o.now();
      this.#plays.delete(event.callSid);
      this.#run(async () => {
        await this.#o.index.record(event.callSid, event.size, at);
        this.request();
      });
    } else if (event.event === 'recording_removed') {
      // A purge, or a recording deleted upstream: the file is gone, so is its row (and its bytes from the
      // totals `recgate stats` reports).
      this.#plays.delete(event.callSid);
      this.#run(() => this.#o.index.remove(event.callSid));
    } else if (event.event === 'cache_hit' || event.event === 'available_while_waiting') {
      this.#plays.set(event.callSid, this.#o.now());
      if (event.event === 'cache_hit')
        this.#hits.set(event.callSid, (this.#hits.get(event.callSid) ?? 0) + 1);
    } else if (event.event === 'cache_miss') {
      this.#downloads++;
    } else if (event.event === 'download_failed' && event.code === 'RECGATE_STORAGE_FULL') {
      // A download refused for lack of room: make room now rather than at the next periodic pass.
      this.request();
    }
  }

  /** Writes buffered plays to the index (last plays in one transaction, the play counters in another). */
  async flush(): Promise<void> {
    const { hits, downloads } = { hits: this.#hits, downloads: this.#downloads };
    this.#hits = new Map();
    this.#downloads = 0;
    if (hits.size > 0 || downloads > 0) await this.#o.index.countPlays(hits, downloads);
    if (this.#plays.size === 0) return;
    const plays = this.#plays;
    this.#plays = new Map();
    await this.#o.index.touch(plays);
  }

  /** Asks for a pass soon (coalesced with one running). Never throws. */
  request(): void {
    if (this.#closed || !this.bounded) return;
    if (this.#pass !== undefined) {
      this.#again = true;
      return;
    }
    this.#run(() => this.evict());
  }

  /**
   * Runs one pass now, unless one runs in this process (then waits for it) or another process holds the
   * eviction lock (then tries again shortly and resolves with `ran: false`).
   */
  async evict(): Promise<EvictionResult> {
    if (this.#pass !== undefined) return this.#pass;
    this.#pass = (async () => {
      try {
        return await this.#locked();
      } finally {
        this.#pass = undefined;
      }
    })();
    const result = await this.#pass;
    if (this.#again && !this.#closed) {
      this.#again = false;
      this.request();
    }
    return result;
  }

  /**
   * Fills an empty index from the files on disk (the one directory scan, after an upgrade), under the
   * eviction lock so one process does it (the others find the index filled). Resolves to the rows
   * inserted; rejects with RECGATE_LOCK_TIMEOUT when the lock stays busy for a minute.
   */
  async backfill(): Promise<number> {
    const lock = this.#o.locker.newLock(EVICTION_LOCK_ID);
    // Waits for a pass (or another process's fill) to end; the totals then say whether to fill.
    await lock.lock(AbortSignal.timeout(BACKFILL_WAIT_MS));
    let inserted = 0;
    try {
      if ((await this.#o.index.totals()).files === 0) inserted = await this.#fill();
    } finally {
      await lock.unlock();
    }
    this.request();
    return inserted;
  }

  async #fill(): Promise<number> {
    const files = await this.#o.store.finished();
    let inserted = 0;
    for (let i = 0; i < files.length; i += 500) {
      const rows: CachedFile[] = files.slice(i, i + 500).map((f) => ({
        callSid: f.id,
        size: f.size,
        lastPlayedMs: f.placedAtMs,
        cachedAtMs: f.placedAtMs,
      }));
      inserted += await this.#o.index.backfill(rows);
    }
    if (inserted > 0) {
      this.#o.logger.info({ event: 'cache_index_filled', files: inserted }, 'Filled the cache index');
    }
    this.#o.onTotals?.(await this.#o.index.totals());
    return inserted;
  }

  /** Resolves once the background work started so far (index writes, passes, retries) is done. */
  async settle(): Promise<void> {
    while (this.#background.size > 0 || this.#pass !== undefined) {
      await Promise.all([...this.#background, this.#pass?.catch(() => undefined)]);
    }
  }

  /** Stops the timers, writes buffered plays, and waits for a running pass. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#retry);
    await this.settle();
    await this.flush().catch((err: unknown) => this.#warn(err));
  }

  async #locked(): Promise<EvictionResult> {
    const lock = this.#o.locker.newLock(EVICTION_LOCK_ID);
    if (!(await lock.tryLock())) {
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.request(), RETRY_MS).unref();
      return { evicted: 0, bytes: 0, skipped: 0, ran: false };
    }
    try {
      await this.flush();
      const result = await this.#walk();
      this.#o.onTotals?.(await this.#o.index.totals());
      return result;
    } finally {
      await lock.unlock();
    }
  }

  /** The pass itself: least recently played first, while a limit is exceeded. */
  async #walk(): Promise<EvictionResult> {
    const { index, store, limits } = this.#o;
    const result: EvictionResult = { evicted: 0, bytes: 0, skipped: 0, ran: true };
    const volume =
      limits.minFree !== undefined || isPercent(limits.maxBytes) ? await store.volume() : undefined;
    const maxBytes = this.#resolve(limits.maxBytes, volume?.totalBytes);
    const minFree = this.#resolve(limits.minFree, volume?.totalBytes);
    let bytes = (await index.totals()).bytes;
    // Freed bytes are counted as they are removed: a descriptor still open elsewhere delays what statfs
    // shows, and waiting for it would evict far more than needed.
    let free = volume?.freeBytes ?? Number.POSITIVE_INFINITY;
    const cutoff = limits.maxAgeMs === undefined ? undefined : this.#o.now() - limits.maxAgeMs;
    let cursor: OldestCursor | undefined;
    for (;;) {
      const batch = await index.oldest(BATCH, cursor);
      if (batch.length === 0) return result;
      for (const row of batch) {
        cursor = row;
        const reason: EvictionReason | undefined =
          maxBytes !== undefined && bytes > maxBytes
            ? 'max_bytes'
            : minFree !== undefined && free < minFree
              ? 'min_free'
              : cutoff !== undefined && row.lastPlayedMs < cutoff
                ? 'max_age'
                : undefined;
        // Rows come least recently played first: once none is over a limit, none after it is.
        if (reason === undefined) return result;
        const removed = await this.#evictOne(row, reason);
        if (removed === undefined) {
          result.skipped++;
          continue;
        }
        bytes -= row.size;
        free += removed;
        if (removed > 0) {
          result.evicted++;
          result.bytes += removed;
        }
      }
    }
  }

  /**
   * Removes one file under its download lock. Resolves to the bytes removed (0 for a row whose file was
   * gone already), or `undefined` when the file was skipped.
   */
  async #evictOne(row: CachedFile, reason: EvictionReason): Promise<number | undefined> {
    const { index, store, locker, logger } = this.#o;
    // Played in this process since the index last heard: not the least recently played any more.
    if (this.#plays.has(row.callSid)) return undefined;
    const lock = locker.newLock(row.callSid);
    if (!(await lock.tryLock())) return undefined;
    try {
      const current = await index.get(row.callSid);
      if (current === undefined || current.lastPlayedMs !== row.lastPlayedMs) return undefined;
      const removed = await store.remove(row.callSid);
      await index.remove(row.callSid);
      if (removed === undefined) {
        logger.debug({ event: 'cache_index_stale', callSid: row.callSid }, 'Indexed file was gone');
        return 0;
      }
      logger.info(
        { event: 'cache_evicted', callSid: row.callSid, size: removed, reason },
        'Evicted a recording from the cache',
      );
      this.#o.onEvicted?.(reason, removed);
      return removed;
    } finally {
      await lock.unlock();
    }
  }

  #resolve(setting: SizeSetting | undefined, volumeBytes: number | undefined): number | undefined {
    if (setting === undefined) return undefined;
    if ('bytes' in setting) return setting.bytes;
    if (volumeBytes === undefined) {
      this.#o.logger.warn(
        { event: 'cache_limit_unknown' },
        `Cannot tell the volume's size, so ${describeSize(setting)} is not enforced`,
      );
      return undefined;
    }
    return resolveSize(setting, volumeBytes);
  }

  /** Runs background work, logging (never throwing) its failure. */
  #run(task: () => Promise<unknown>): void {
    const done = task().then(
      () => undefined,
      (err: unknown) => this.#warn(err),
    );
    this.#background.add(done);
    void done.finally(() => this.#background.delete(done));
  }

  #warn(err: unknown): void {
    this.#o.logger.warn({ err, event: 'cache_eviction_failed' }, 'Bounded-disk upkeep failed');
  }
}

function isPercent(setting: SizeSetting | undefined): boolean {
  return setting !== undefined && 'percent' in setting;
}
