/**
 * The recording cache: one download per recording across requests, worker processes and (with a shared
 * lock backend) hosts, bytes streamed to every waiter while it runs, stored atomically as `{callSid}.mp3`.
 *
 * In a process, a map of {@link Flight}s keyed by owner call SID makes concurrent requests share one flight.
 * Across processes, the flight first takes the recording's {@link Lock}:
 *
 * - got it: the final file may have appeared meanwhile (done); otherwise it downloads into the store's
 *   partial, resuming a partial left by a dead holder when the upstream honours Range, and commits it;
 * - did not: another process downloads. The flight polls the store for the sidecar (to learn the size and
 *   let `open()` resolve), follows the frontier the holder publishes so its readers stream while the other
 *   process writes, and waits for the lock at the same time. If the final file appears, it is done; if the
 *   lock comes free without a final file, the holder died or gave up, and this flight takes over the
 *   download.
 *
 * Either way, a reader that stalls far beyond the frontier may get its bytes from a seek-ahead slice
 * (`seek-ahead.ts`), fetched by this process or found in the block map another process keeps.
 */
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { createError, isRecgateError, type RecgateError, storageError } from '../errors.js';
import type { MediaResponse, Upstream } from '../upstream/upstream.js';
import type {
  CachedRecording,
  CacheOutcome,
  CacheState,
  OpenOptions,
  RecordingCache,
  RecordingRef,
} from './cache.js';
import { Flight, type Identity } from './flight.js';
import type { Locker } from './lock/lock.js';
import { SeekAhead, SeekAheadPool, type SeekAheadSettings } from './seek-ahead.js';
import type { FileInfo, PartialMeta, PartialWriter, RecordingStore } from './store/store.js';

/** Structured events, logged as `{event: name, …}` and passed to the {@link CacheEventHandler}. */
export type CacheEventName =
  | 'cache_hit'
  | 'cache_miss'
  | 'lock_wait'
  | 'available_while_waiting'
  | 'recording_saved'
  | 'download_failed'
  | 'takeover'
  | 'download_resumed'
  | 'seek_ahead'
  | 'seek_ahead_discarded';

/**
 * Observer of cache events, for metrics; called after the event is logged, and exceptions it throws are
 * ignored. Fields always include `callSid` and `recordingSid`. A download starts with `cache_miss` (or
 * `takeover`) and ends with `recording_saved` or a `download_failed` whose `phase` is `download`.
 * - `recording_saved`: `size` (recording bytes), `bytes` (bytes this download fetched from the upstream,
 *   less than `size` after a resume), `durationMs`, `ttfbMs`;
 * - `download_failed`: `code` (RecgateError code), `phase` (`download`, or `wait` for a wait on another
 *   process that failed, such as a lock timeout);
 * - `download_resumed`: `offset`; `cache_hit`, `available_while_waiting`: `size`; `takeover`: `received`;
 * - `seek_ahead`: one ranged upstream request for a slice ended; `offset` (its first byte), `end` (exclusive
 *   end of what it put on disk), `bytes` (body bytes received from the upstream), `ttfbMs`, `durationMs`,
 *   and `error` (a RecgateError code) when it failed midway;
 * - `seek_ahead_discarded`: a slice request whose body nobody used; `reason`: `no_range` (the upstream
 *   answered 200 or the download says it serves no ranges) or `validator_mismatch` (ETag, Last-Modified or
 *   total size differ from the download's), both of which end seek-ahead for the recording; or
 *   `superseded` (an early slice no longer needed: budget spent, range taken, download over); with
 *   `offset`, `bytes` (body bytes received, normally 0), and for a mismatch `status`, `etag`,
 *   `expectedEtag`.
 * Each `seek_ahead` or `seek_ahead_discarded` stands for exactly one upstream media request of kind "slice".
 */
export type CacheEventHandler = (event: CacheEventName, fields: Record<string, unknown>) => void;

export interface LocalCacheSettings {
  store: RecordingStore;
  locker: Locker;
  upstream: Pick<Upstream, 'fetchMedia'>;
  logger: Logger;
  lockTimeoutMs: number;
  pollIntervalMs: number;
  maxResumeAttempts: number;
  sweepMaxAgeMs: number;
  onEvent: CacheEventHandler | undefined;
  seekAhead: SeekAheadSettings;
}

export interface SweepResult {
  /** Recordings whose abandoned partial and sidecar were removed. */
  partials: number;
  /** Lock files removed. */
  locks: number;
}

/** {@link RecordingCache} plus the maintenance a deployment runs on its own schedule. */
export interface LocalRecordingCache extends RecordingCache {
  /**
   * Removes partials and sidecars that no live process uses (their lock is free) and that have not changed
   * for `maxAgeMs` (default: the cache's `sweepMaxAgeMs`), then stray lock files. Partials in use, or
   * younger than that, stay: a later request resumes them. Safe to run while other processes serve.
   */
  sweep(options?: { maxAgeMs?: number }): Promise<SweepResult>;
}

type WatchResult = { kind: 'acquired' } | { kind: 'final'; final: FileInfo };

export class LocalCache implements LocalRecordingCache {
  readonly #s: LocalCacheSettings;
  readonly #flights = new Map<string, Flight>();
  readonly #seekAheads = new WeakMap<Flight, SeekAhead>();
  readonly #pool: SeekAheadPool;
  #closed = false;

  constructor(settings: LocalCacheSettings) {
    this.#s = settings;
    this.#pool = new SeekAheadPool(settings.seekAhead);
  }

  async open(ref: RecordingRef, options: OpenOptions = {}): Promise<CachedRecording> {
    if (this.#closed) throw createError('RECGATE_SHUTTING_DOWN');
    const log = (options.log ?? this.#s.logger).child({
      callSid: ref.ownerCallSid,
      recordingSid: ref.recordingSid,
    });
    const signal = options.signal;
    if (signal?.aborted) throw createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });

    let flight = this.#running(ref.ownerCallSid);
    let joined = flight !== undefined;
    if (flight === undefined) {
      const final = await this.#s.store.stat(ref.ownerCallSid);
      if (final !== undefined) {
        this.#event(log, 'cache_hit', ref, { size: final.size }, 'Cache hit');
        return this.#finished(ref, final, 'hit');
      }
      // Look again after the await, and start the flight without awaiting: that makes it single.
      flight = this.#running(ref.ownerCallSid);
      joined = flight !== undefined;
      flight ??= this.#start(ref, log);
    }
    if (joined) log.debug({ event: 'download_joined' }, 'Joining the download in flight');
    const readStart = options.readStart;
    if (readStart !== undefined && Number.isSafeInteger(readStart) && readStart >= 0) {
      this.#seekAheads.get(flight)?.hint(readStart);
    }
    await raceAbort(flight.ready, signal);
    const identity = flight.identity!;
    let outcome: CacheOutcome = joined ? 'wait' : flight.origin;
    if (flight.origin === 'hit') outcome = 'hit';
    return new InflightRecording(ref, identity, outcome, flight, this.#s.store);
  }

  async state(ref: RecordingRef): Promise<CacheState> {
    const flight = this.#flights.get(ref.ownerCallSid);
    if (flight?.state === 'running' && flight.identity !== undefined && flight.current !== undefined) {
      return { state: 'downloading', size: flight.identity.size, received: flight.frontier };
    }
    const final = await this.#s.store.stat(ref.ownerCallSid);
    if (final !== undefined) return { state: 'cached', size: final.size };
    const part = await this.#s.store.statPartial(ref.ownerCallSid);
    if (part !== undefined) {
      const meta = await this.#s.store.readMeta(ref.ownerCallSid);
      return {
        state: 'downloading',
        size: meta?.fileId === part.fileId ? meta.size : null,
        received: (await this.#s.store.readFrontier(ref.ownerCallSid, part.fileId)) ?? 0,
      };
    }
    if (flight?.state === 'running') return { state: 'downloading', size: null, received: 0 };
    return { state: 'absent' };
  }

  async sweep(options: { maxAgeMs?: number } = {}): Promise<SweepResult> {
    const maxAgeMs = options.maxAgeMs ?? this.#s.sweepMaxAgeMs;
    if (!Number.isInteger(maxAgeMs) || maxAgeMs < 0) {
      throw new TypeError('options.maxAgeMs must be a non-negative integer');
    }
    const now = Date.now();
    let partials = 0;
    for (const { id, mtime } of await this.#s.store.leftovers()) {
      if (this.#flights.has(id) || now - mtime.getTime() < maxAgeMs) continue;
      const lock = this.#s.locker.newLock(id);
      if (!(await lock.tryLock())) continue;
      try {
        await this.#s.store.discardPartial(id);
        partials++;
      } finally {
        await lock.unlock();
      }
    }
    const locks = (await this.#s.locker.sweep?.()) ?? 0;
    if (partials > 0 || locks > 0)
      this.#s.logger.info({ event: 'sweep', partials, locks }, 'Swept leftovers');
    return { partials, locks };
  }

  async close(): Promise<void> {
    this.#closed = true;
    const flights = [...this.#flights.values()];
    for (const flight of flights) {
      if (flight.state === 'running') flight.abort.abort(createError('RECGATE_SHUTTING_DOWN'));
    }
    await Promise.allSettled(flights.map((f) => f.done));
    await this.#s.store.close?.();
  }

  #finished(ref: RecordingRef, final: FileInfo, outcome: CacheOutcome): CachedRecording {
    const identity: Identity = { size: final.size, lastModified: final.mtime, upstreamEtag: null };
    return new InflightRecording(ref, identity, outcome, undefined, this.#s.store);
  }

  /** The flight requests may join: one still running. A finished or failed one is never joined. */
  #running(id: string): Flight | undefined {
    const flight = this.#flights.get(id);
    return flight?.state === 'running' ? flight : undefined;
  }

  #start(ref: RecordingRef, log: Logger): Flight {
    const previous = this.#flights.get(ref.ownerCallSid);
    const flight = new Flight(ref);
    this.#flights.set(ref.ownerCallSid, flight);
    const seekAhead = new SeekAhead({
      flight,
      store: this.#s.store,
      upstream: this.#s.upstream,
      pool: this.#pool,
      pollIntervalMs: this.#s.pollIntervalMs,
      log,
      event: (name, fields, message, level) => this.#event(log, name, ref, fields, message, level),
    });
    this.#seekAheads.set(flight, seekAhead);
    flight.onStall = (position, end, first) =>
      first ? seekAhead.consider(position, end) : seekAhead.poll(position);
    flight.done = this.#run(flight, log, previous?.done);
    return flight;
  }

  async #run(flight: Flight, log: Logger, previous: Promise<void> | undefined): Promise<void> {
    const { store, locker } = this.#s;
    const lock = locker.newLock(flight.id);
    let held = false;
    let phase: 'wait' | 'download' = 'wait';
    try {
      // A flight of this process that just ended may still be releasing the lock; let it finish first.
      await previous;
      held = await lock.tryLock();
      let waited = false;
      if (!held) {
        waited = true;
        flight.origin = 'wait';
        this.#event(log, 'lock_wait', flight.ref, {}, 'Waiting for lock (another worker downloading)');
        const result = await this.#watch(flight, lock);
        if (result.kind === 'final') {
          await this.#completeFromFinal(flight, result.final, log);
          return;
        }
        held = true;
      }
      const final = await store.stat(flight.id);
      if (final !== undefined) {
        if (waited) {
          await this.#completeFromFinal(flight, final, log);
        } else {
          flight.origin = 'hit';
          this.#event(log, 'cache_hit', flight.ref, { size: final.size }, 'Cache hit');
          await this.#completeFromFinal(flight, final, undefined);
        }
        return;
      }
      if (waited) {
        this.#event(
          log,
          'takeover',
          flight.ref,
          { received: flight.frontier },
          'Taking over an abandoned download',
        );
      }
      phase = 'download';
      await this.#download(flight, log, waited);
    } catch (err) {
      const error = asRecgateError(err, flight.abort.signal);
      // A failed flight stays in the map until its lock is released, so the next flight can wait for that
      // (see #start), but it is never joined again (see #running).
      flight.fail(error);
      this.#event(
        log,
        'download_failed',
        flight.ref,
        { code: error.code, phase, err: error.cause ?? error },
        'Download failed',
        'warn',
      );
    } finally {
      flight.onStall = undefined;
      await this.#seekAheads.get(flight)?.stop();
      if (held) await lock.unlock().catch((err: unknown) => log.warn({ err }, 'Unlocking failed'));
      if (this.#flights.get(flight.id) === flight) this.#flights.delete(flight.id);
      await flight.dispose();
    }
  }

  async #completeFromFinal(flight: Flight, final: FileInfo, log: Logger | undefined): Promise<void> {
    const handle = await this.#s.store.openFinal(flight.id);
    if (handle === undefined) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The recording disappeared from the store' });
    }
    flight.own(handle);
    if (log !== undefined) {
      this.#event(
        log,
        'available_while_waiting',
        flight.ref,
        { size: final.size },
        'File became available while waiting',
      );
    }
    flight.complete(final, handle);
  }

  /**
   * Follows a download another process runs until the final file appears or the lock comes free. Fails
   * with RECGATE_LOCK_TIMEOUT when nothing moves (no sidecar, no growth) for `lockTimeoutMs`.
   */
  async #watch(flight: Flight, lock: ReturnType<Locker['newLock']>): Promise<WatchResult> {
    const { store, pollIntervalMs, lockTimeoutMs } = this.#s;
    const stopLock = new AbortController();
    let acquired = false;
    const locking = lock.lock(stopLock.signal).then(
      () => {
        acquired = true;
      },
      (err: unknown) => {
        if (!stopLock.signal.aborted) throw err;
      },
    );
    let keep = false;
    let lastProgress = performance.now();
    try {
      for (;;) {
        await Promise.race([locking, sleep(pollIntervalMs, undefined, { signal: flight.abort.signal })]);
        if (acquired) {
          keep = true;
          return { kind: 'acquired' };
        }
        const final = await store.stat(flight.id);
        if (final !== undefined) return { kind: 'final', final };
        if (await this.#follow(flight)) lastProgress = performance.now();
        else if (performance.now() - lastProgress > lockTimeoutMs) {
          throw createError('RECGATE_LOCK_TIMEOUT', {
            cause: new Error(`no progress from the lock holder for ${lockTimeoutMs} ms`),
          });
        }
      }
    } finally {
      stopLock.abort();
      await locking.catch(() => undefined);
      if (acquired && !keep) await lock.unlock();
    }
  }

  /** One look at another process's partial; `true` when the flight learned something new. */
  async #follow(flight: Flight): Promise<boolean> {
    const { store } = this.#s;
    const part = await store.statPartial(flight.id);
    if (part === undefined) return false;
    if (flight.current?.fileId !== part.fileId) {
      const meta = await store.readMeta(flight.id);
      if (meta === undefined || meta.fileId !== part.fileId || meta.size === null) return false;
      const handle = await store.openPartial(flight.id);
      if (handle === undefined) return false;
      flight.own(handle);
      if (handle.fileId !== part.fileId) return false;
      // The file's length says nothing about the frontier: slices may have been written beyond it.
      const frontier = await store.readFrontier(flight.id, handle.fileId);
      if (frontier === undefined) return false;
      flight.meta = meta;
      flight.setIdentity(identityOf(meta, meta.size));
      flight.adopt(handle, Math.min(frontier, meta.size));
      return true;
    }
    const published = await store.readFrontier(flight.id, flight.current.fileId);
    if (published === undefined) return false;
    const frontier = Math.min(published, flight.identity!.size);
    if (frontier <= flight.frontier) return false;
    flight.advance(frontier);
    return true;
  }

  async #download(flight: Flight, log: Logger, takeover: boolean): Promise<void> {
    const { store, upstream, maxResumeAttempts } = this.#s;
    const { ref } = flight;
    const signal = flight.abort.signal;
    const started = performance.now();
    let ttfbMs: number | undefined;
    let failures = 0;
    let fetched = 0;
    let discard = false;
    let writer: PartialWriter | undefined = await store.resumePartial(flight.id);
    if (writer !== undefined) flight.own(writer);
    // A holder that died after its last byte but before the rename left a complete partial: commit it.
    const leftComplete = writer !== undefined && writer.length > 0 && writer.length === writer.meta.size;
    if (!takeover) {
      this.#event(
        log,
        'cache_miss',
        ref,
        writer === undefined ? {} : { leftover: writer.length },
        'Cache miss - downloading from Twilio',
      );
    }
    try {
      if (leftComplete) {
        this.#event(log, 'download_resumed', ref, { offset: writer!.length }, 'Found the download complete');
        flight.meta = writer!.meta;
        flight.setIdentity(identityOf(writer!.meta, writer!.length));
        flight.adopt(writer!, writer!.length);
      }
      while (!leftComplete) {
        const offset = writer !== undefined ? resumeOffset(writer) : 0;
        this.#seekAheads.get(flight)?.downloadStarting();
        const response: MediaResponse = await upstream.fetchMedia(
          ref.recordingSid,
          offset > 0 ? { signal, start: offset, ifRange: writer!.meta.etag! } : { signal },
        );
        ttfbMs ??= performance.now() - started;
        const stopBody = () => response.body.destroy(signal.reason);
        signal.addEventListener('abort', stopBody, { once: true });
        try {
          let active: PartialWriter;
          if (offset > 0 && isResumption(response, offset, writer!.meta)) {
            active = writer!;
            this.#event(log, 'download_resumed', ref, { offset }, 'Resuming the download');
          } else {
            if (response.status === 206 && response.start !== 0) {
              // A range we cannot use (the recording changed, or a wrong offset): fetch it whole instead.
              writer = undefined;
              if (++failures > maxResumeAttempts) {
                throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
                  cause: new Error(`unusable 206 from offset ${response.start}`),
                });
              }
              continue;
            }
            active = await store.beginPartial(flight.id, {
              recordingSid: ref.recordingSid,
              size: response.totalSize,
              etag: response.etag,
              lastModified: response.lastModified,
              acceptsRanges: response.acceptsRanges,
              startedAt: new Date().toISOString(),
            });
            writer = active;
            flight.own(active);
            if (offset > 0)
              log.info({ event: 'download_restarted', offset }, 'The upstream did not resume; restarting');
          }
          const size = active.meta.size;
          flight.meta = active.meta;
          if (size !== null) flight.setIdentity(identityOf(active.meta, size));
          flight.adopt(active, active.length);
          try {
            for await (const chunk of response.body as AsyncIterable<Buffer>) {
              if (size !== null && active.length + chunk.byteLength > size) {
                discard = true;
                throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
                  cause: new Error(`upstream sent more than the ${size} bytes it announced`),
                });
              }
              await active.append(chunk).catch((err: unknown) => {
                throw storageError(err);
              });
              fetched += chunk.byteLength;
              flight.advance(active.length);
            }
            if (size !== null && active.length !== size) {
              throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
                cause: new Error(`upstream body ended at ${active.length} of ${size} bytes`),
              });
            }
            break;
          } catch (err) {
            if (signal.aborted || discard || isStorageError(err) || failures >= maxResumeAttempts) throw err;
            failures++;
            log.warn(
              { event: 'download_retry', attempt: failures, received: active.length, err },
              'Download broke off; retrying',
            );
            await sleep(50 * failures, undefined, { signal });
          }
        } finally {
          signal.removeEventListener('abort', stopBody);
          // Frees the connection whatever ended this attempt; a no-op for a body read to its end.
          response.body.destroy();
        }
      }
      const done = writer!;
      const size = done.length;
      // Slices of this process stop writing before the rename (those of others are waited for by commit).
      await this.#seekAheads.get(flight)?.stop();
      if (flight.identity === undefined) flight.setIdentity(identityOf(done.meta, size));
      const final = await done.commit(size, flight.identity!.lastModified);
      flight.complete(final, done);
      this.#event(
        log,
        'recording_saved',
        ref,
        {
          size,
          bytes: fetched,
          durationMs: Math.round(performance.now() - started),
          ttfbMs: Math.round(ttfbMs ?? 0),
        },
        'Recording saved',
      );
    } catch (err) {
      const code = isRecgateError(err) ? err.code : undefined;
      if (discard || code === 'RECGATE_RECORDING_GONE' || code === 'RECGATE_STORAGE_FULL') {
        await store.discardPartial(flight.id).catch(() => undefined);
      }
      throw err;
    }
  }

  #event(
    log: Logger,
    event: CacheEventName,
    ref: RecordingRef,
    fields: Record<string, unknown>,
    message: string,
    level: 'info' | 'warn' = 'info',
  ): void {
    log[level]({ event, ...fields }, message);
    try {
      this.#s.onEvent?.(event, {
        callSid: ref.ownerCallSid,
        recordingSid: ref.recordingSid,
        ...fields,
      });
    } catch {
      // Metrics must never break serving.
    }
  }
}

class InflightRecording implements CachedRecording {
  readonly size: number;
  readonly etag: string;
  readonly lastModified: Date;
  readonly outcome: CacheOutcome;
  readonly #ref: RecordingRef;
  readonly #flight: Flight | undefined;
  readonly #store: RecordingStore;

  constructor(
    ref: RecordingRef,
    identity: Identity,
    outcome: CacheOutcome,
    flight: Flight | undefined,
    store: RecordingStore,
  ) {
    this.size = identity.size;
    this.etag = `"${ref.recordingSid}-${identity.size}"`;
    this.lastModified = identity.lastModified;
    this.outcome = outcome;
    this.#ref = ref;
    this.#flight = flight;
    this.#store = store;
  }

  get complete(): boolean {
    return this.#flight === undefined || this.#flight.state === 'complete';
  }

  createReadStream(start: number, end: number): Readable {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end >= this.size) {
      throw new RangeError(`bytes ${start}-${end} are outside 0-${this.size - 1}`);
    }
    if (end < start) return Readable.from([]);
    const flight = this.#flight;
    if (flight?.state === 'running') return flight.createReadStream(start, end);
    if (flight?.state === 'failed') {
      const failed = new Readable({ read() {} });
      failed.destroy(flight.error);
      return failed;
    }
    return this.#store.createReadStream(this.#ref.ownerCallSid, start, end);
  }
}

function identityOf(meta: PartialMeta, size: number): Identity {
  const upstream = meta.lastModified === null ? Number.NaN : Date.parse(meta.lastModified);
  const when = Number.isNaN(upstream) ? Date.parse(meta.startedAt) : upstream;
  // HTTP dates have one-second resolution; the final file's mtime is set to the same whole second.
  return { size, lastModified: new Date(Math.floor(when / 1000) * 1000), upstreamEtag: meta.etag };
}

/** Where a holder may resume the partial it found, or 0 to fetch the whole recording. */
function resumeOffset(writer: PartialWriter): number {
  const { meta, length } = writer;
  if (!meta.acceptsRanges || meta.etag === null || meta.size === null) return 0;
  return length > 0 && length < meta.size ? length : 0;
}

function isResumption(response: MediaResponse, offset: number, meta: PartialMeta): boolean {
  return (
    response.status === 206 &&
    response.start === offset &&
    response.totalSize === meta.size &&
    (response.etag === null || response.etag === meta.etag)
  );
}

function isStorageError(err: unknown): boolean {
  return isRecgateError(err) && (err.code === 'RECGATE_STORAGE_FULL' || err.code === 'RECGATE_STORAGE_ERROR');
}

function asRecgateError(err: unknown, signal: AbortSignal): RecgateError {
  if (isRecgateError(err)) return err;
  if (signal.aborted && isRecgateError(signal.reason)) return signal.reason;
  return createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: err });
}

async function raceAbort(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return promise;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason }));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}
