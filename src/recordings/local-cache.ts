/**
 * The recording cache: one download per recording across requests, worker processes and (with a shared
 * lock backend) hosts, bytes streamed to every waiter while it runs, stored atomically as `{callSid}.mp3`.
 *
 * In a process, a map of {@link Flight}s keyed by owner call SID makes concurrent requests for the same
 * recording share one flight; the flight's download runs as the named steps of `download/run.ts` (claim the
 * lock, or follow the process that holds it; fetch; write; commit). A finished file serves a request only if
 * its identity record says it holds the recording the resolver chose; any other file under the name is
 * replaced by a new download. A reader that stalls far beyond the frontier may get its bytes from a
 * seek-ahead slice (`seek-ahead.ts`), fetched by this process or found in another process's block map.
 */
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { createError } from '../errors.js';
import { raceAbort, signalOf } from '../io/abort.js';
import { logsAt } from '../observability/logger.js';
import type { CallSid } from '../sid.js';
import type { Upstream } from '../upstream/upstream.js';
import type { UpstreamGate } from './admission/gate.js';
import {
  assertRange,
  type CachedRecording,
  type CacheOutcome,
  type CacheState,
  cacheKeyOf,
  type OpenOptions,
  type RecordingCache,
  type RecordingRef,
  type RemoveOptions,
} from './cache.js';
import { GCM_TAG_BYTES } from './decrypt/gcm.js';
import { type DownloadContext, holds } from './download/context.js';
import { runDownload } from './download/run.js';
import type { CacheEvent, CacheEventHandler, EmitEvent, RemoveReason } from './events.js';
import { Flight, type Identity } from './flight.js';
import type { Locker } from './lock/lock.js';
import { SeekAhead, SeekAheadPool, type SeekAheadSettings } from './seek-ahead.js';
import type { FinalInfo, RecordingStore, StoredEncryption } from './store/store.js';
import { isCanonical, recordingEtag, VARIANTS, variantKey, variantSuffix } from './variant.js';

/** See {@link LocalCacheSettings.decryptStored}. */
export type DecryptStored = (
  recording: CachedRecording,
  ref: RecordingRef,
  businessId: string,
) => CachedRecording;

/** How often one flight goes back to following after losing its lock, before it fails. */
const MAX_LOCK_LOSSES = 3;
/** Age after which a temporary file (a sidecar written aside, a write probe) is certainly abandoned. */
const TEMPORARY_MAX_AGE_MS = 60_000;
/** How long a storage probe's answer is reused by `writable()`. */
const WRITABLE_TTL_MS = 2000;

export interface LocalCacheSettings {
  store: RecordingStore;
  locker: Locker;
  upstream: Pick<Upstream, 'fetchMedia'>;
  /** The media a flight started for a business downloads, when it is not `upstream` (decryption). */
  mediaFor: ((businessId: string) => Pick<Upstream, 'fetchMedia'>) | undefined;
  /**
   * Opens a recording whose bytes are kept encrypted ({@link CachedRecording.encryption}) for a business:
   * a plaintext view, or RECGATE_RECORDING_ENCRYPTED. Without it such a recording is refused the same way.
   */
  decryptStored: DecryptStored | undefined;
  logger: Logger;
  lockTimeoutMs: number;
  pollIntervalMs: number;
  maxResumeAttempts: number;
  sweepMaxAgeMs: number;
  onEvent: CacheEventHandler | undefined;
  seekAhead: SeekAheadSettings;
  /** Breaker, cold-download rate limit and admission queue before each download this process runs. */
  gate: UpstreamGate;
}

export interface SweepResult {
  /** Recordings whose abandoned generations and sidecars were removed. */
  partials: number;
  /** Temporary files (half-made sidecars, write probes) removed. */
  temporary: number;
  /** Lock files removed. */
  locks: number;
}

/** {@link RecordingCache} plus the maintenance a deployment runs on its own schedule. */
export interface LocalRecordingCache extends RecordingCache {
  openNow(ref: RecordingRef, options?: OpenOptions): CachedRecording | undefined;
  openRunning(ref: RecordingRef, options?: OpenOptions): Promise<CachedRecording | undefined>;

  /**
   * Removes what no live process uses (the recording's lock is free): generations that are no longer
   * current at once, the current one once it has not changed for `maxAgeMs` (default: the cache's
   * `sweepMaxAgeMs`; until then a later request resumes it), identity records without their recording,
   * the pointer and identity record a dead holder was writing aside (at once), other temporary files older
   * than a minute, then stray lock files. Safe to run while other processes serve.
   */
  sweep(options?: { maxAgeMs?: number }): Promise<SweepResult>;
}

interface Entry {
  flight: Flight;
  seekAhead: SeekAhead;
  /** The flight's download; settles (never rejects) once its lock is released. */
  done: Promise<void>;
}

export class LocalCache implements LocalRecordingCache {
  readonly #s: LocalCacheSettings;
  readonly #flights = new Map<string, Entry>();
  readonly #pool: SeekAheadPool;
  #closed = false;
  #writable: { at: number; ok: Promise<boolean> } | undefined;

  constructor(settings: LocalCacheSettings) {
    this.#s = settings;
    this.#pool = new SeekAheadPool(settings.seekAhead);
  }

  async open(ref: RecordingRef, options: OpenOptions = {}): Promise<CachedRecording> {
    if (this.#closed) throw createError('RECGATE_SHUTTING_DOWN');
    // A plain signal that already fired ends the call here. A lazy one is made only past the cache hit,
    // which waits for nothing.
    if (typeof options.signal !== 'function') options.signal?.throwIfAborted();

    let entry = this.#running(ref);
    let joined = entry !== undefined;
    if (entry === undefined) {
      const final = await this.#final(ref);
      if (final !== undefined) return this.#hit(ref, final, options);
    }
    const signal = signalOf(options.signal);
    signal?.throwIfAborted();
    const base = options.log ?? this.#s.logger;
    if (entry === undefined) {
      // Look again after the await, and start the flight without awaiting: that makes it single.
      entry = this.#running(ref);
      joined = entry !== undefined;
      entry ??= this.#start(ref, base.child(bindingsOf(ref)), options.businessId ?? '');
    }
    return this.#join(entry, joined, ref, options, signal);
  }

  async openRunning(ref: RecordingRef, options: OpenOptions = {}): Promise<CachedRecording | undefined> {
    if (this.#closed) throw createError('RECGATE_SHUTTING_DOWN');
    if (typeof options.signal !== 'function') options.signal?.throwIfAborted();
    const entry = this.#running(ref);
    if (entry === undefined) return undefined;
    const signal = signalOf(options.signal);
    signal?.throwIfAborted();
    return this.#join(entry, true, ref, options, signal);
  }

  /** Waits, as `open` does, for the size of the download `entry` runs (started by this call unless `joined`). */
  async #join(
    entry: Entry,
    joined: boolean,
    ref: RecordingRef,
    options: OpenOptions,
    signal: AbortSignal | undefined,
  ): Promise<CachedRecording> {
    const { flight } = entry;
    const base = options.log ?? this.#s.logger;
    // A joiner makes no child logger (two, through a request's lazy one): under a stampede that was the
    // largest cost of joining, for a line below the usual level.
    if (joined && logsAt(base, 'debug')) {
      base.debug({ ...bindingsOf(ref), event: 'download_joined' }, 'Joining the download in flight');
    }
    const readStart = options.readStart;
    if (readStart !== undefined && Number.isSafeInteger(readStart) && readStart >= 0) {
      entry.seekAhead.hint(readStart);
    }
    const waited = flight.addWaiter();
    try {
      await raceAbort(flight.ready, signal);
    } finally {
      waited();
    }
    const outcome: CacheOutcome = flight.origin === 'hit' ? 'hit' : joined ? 'wait' : flight.origin;
    const recording = new InflightRecording(ref, flight.identity!, outcome, flight, this.#s.store, undefined);
    return this.#plain(recording, flight.encryption, ref, options);
  }

  /**
   * {@link open}'s answer at once for a finished file the store trusts now ({@link RecordingStore.statNow}):
   * the warm play. `undefined` otherwise (a download runs, or the file is due a look): then `open` decides.
   * Throws what `open` rejects with for such a file.
   */
  openNow(ref: RecordingRef, options: OpenOptions = {}): CachedRecording | undefined {
    if (this.#closed) throw createError('RECGATE_SHUTTING_DOWN');
    if (typeof options.signal !== 'function') options.signal?.throwIfAborted();
    if (this.#running(ref) !== undefined) return undefined;
    const final = this.#s.store.statNow?.(cacheKeyOf(ref));
    return final !== undefined && holds(final, ref) ? this.#hit(ref, final, options) : undefined;
  }

  /** A request served from the finished file `final`, which holds `ref`. */
  #hit(ref: RecordingRef, final: FinalInfo, options: OpenOptions): CachedRecording {
    // The hit is the warm path: its event is logged with the recording's SIDs as fields, which costs no child
    // logger, and its fields are not even put together below the line's level.
    const log = options.log ?? this.#s.logger;
    if (logsAt(log, 'info')) {
      log.info({ ...bindingsOf(ref), event: 'cache_hit', size: final.size }, 'Cache hit');
    }
    this.#observe({
      event: 'cache_hit',
      size: final.size,
      callSid: cacheKeyOf(ref),
      recordingSid: ref.recordingSid,
    });
    const identity: Identity = { size: final.size, lastModified: final.mtime, upstreamEtag: null };
    const hit = new InflightRecording(ref, identity, 'hit', undefined, this.#s.store, final.fileId);
    return this.#plain(hit, final.identity?.encryption, ref, options);
  }

  /** `recording` as the caller reads it: through `decryptStored` when its bytes are kept encrypted. */
  #plain(
    recording: InflightRecording,
    encryption: StoredEncryption | undefined,
    ref: RecordingRef,
    options: OpenOptions,
  ): CachedRecording {
    if (encryption === undefined) return recording;
    recording.encryption = encryption;
    if (this.#s.decryptStored === undefined) {
      throw createError('RECGATE_RECORDING_ENCRYPTED', {
        cause: new Error('the recording is kept encrypted and this cache decrypts nothing'),
      });
    }
    return this.#s.decryptStored(recording, ref, options.businessId ?? '');
  }

  async state(ref: RecordingRef): Promise<CacheState> {
    const { store } = this.#s;
    const flight = this.#running(ref)?.flight;
    if (flight?.identity !== undefined && flight.current !== undefined) {
      const tag = tagBytes(flight.encryption);
      return {
        state: 'downloading',
        size: flight.identity.size - tag,
        received: Math.min(flight.frontier, flight.identity.size - tag),
      };
    }
    const final = await this.#final(ref);
    if (final !== undefined)
      return { state: 'cached', size: final.size - tagBytes(final.identity?.encryption) };
    const key = cacheKeyOf(ref);
    const meta = await store.readMeta(key);
    if (meta?.recordingSid === ref.recordingSid) {
      const received = await store.readFrontier(key, meta.fileId);
      const tag = tagBytes(meta.encryption);
      if (received !== undefined) {
        const size = meta.size === null ? null : meta.size - tag;
        return { state: 'downloading', size, received: size === null ? received : Math.min(received, size) };
      }
    }
    if (flight !== undefined) return { state: 'downloading', size: null, received: 0 };
    return { state: 'absent' };
  }

  async writable(): Promise<boolean> {
    const now = performance.now();
    if (this.#writable === undefined || now - this.#writable.at > WRITABLE_TTL_MS) {
      this.#writable = {
        at: now,
        ok: this.#s.store.checkWritable().then(
          () => true,
          (err: unknown) => {
            this.#s.logger.warn(
              { err, event: 'storage_unwritable' },
              'The recordings directory cannot be written',
            );
            return false;
          },
        ),
      };
    }
    return this.#writable.ok;
  }

  async sweep(options: { maxAgeMs?: number } = {}): Promise<SweepResult> {
    const maxAgeMs = options.maxAgeMs ?? this.#s.sweepMaxAgeMs;
    if (!Number.isInteger(maxAgeMs) || maxAgeMs < 0) {
      throw new TypeError('options.maxAgeMs must be a non-negative integer');
    }
    const { store, locker } = this.#s;
    const now = Date.now();
    let partials = 0;
    for (const { id, mtime, current, names } of await store.leftovers()) {
      // A current generation may still be resumed for a while; anything else is no use to anyone.
      if (this.#flights.has(id) || (current && now - mtime.getTime() < maxAgeMs)) continue;
      const lock = locker.newLock(id);
      if (!(await lock.tryLock())) continue;
      try {
        await store.removeLeftovers(id, names);
        partials++;
      } finally {
        await lock.unlock();
      }
    }
    const temporary = await store.sweepTemporary(TEMPORARY_MAX_AGE_MS);
    const locks = (await locker.sweep?.()) ?? 0;
    if (partials > 0 || locks > 0 || temporary > 0) {
      this.#s.logger.info({ event: 'sweep', partials, locks, temporary }, 'Swept leftovers');
    }
    return { partials, locks, temporary };
  }

  /**
   * Removes everything stored for the recording of owner call `id`, each variant in turn (see
   * `variant.ts`); resolves to the finished files' total size, or `null` when there was none.
   */
  async remove(id: CallSid, reason: RemoveReason, options: RemoveOptions = {}): Promise<number | null> {
    let total: number | null = null;
    for (const variant of VARIANTS) {
      const size = await this.#removeEntry(variantKey(id, variant), reason, options, isCanonical(variant));
      if (size !== null) total = (total ?? 0) + size;
    }
    return total;
  }

  /**
   * Removes everything stored for cache entry `id`: the finished file, its identity record, data derived
   * from it (peaks), partial generations. A download of it (in this process or any other the lock reaches) finishes first,
   * so its readers get their bytes; then the recording's lock is taken (waiting at most the cache's lock
   * timeout, or until `signal` aborts: RECGATE_LOCK_TIMEOUT) and the files go. Streams already reading the
   * file finish; no request started afterwards is served from it (other processes stop within their
   * descriptors' revalidation time, about a second). Resolves to the finished file's size, or `null` when
   * there was none. `canonical`: report the removal (log line, event) even when no finished file was there.
   */
  async #removeEntry(
    id: string,
    reason: RemoveReason,
    options: RemoveOptions,
    canonical: boolean,
  ): Promise<number | null> {
    const log = (options.log ?? this.#s.logger).child({ callSid: id });
    const timeout = AbortSignal.timeout(this.#s.lockTimeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    await raceAbort(this.#flights.get(id)?.done ?? Promise.resolve(), signal).catch((err: unknown) => {
      throw createError('RECGATE_LOCK_TIMEOUT', { cause: err });
    });
    const lock = this.#s.locker.newLock(id);
    await lock.lock(signal);
    try {
      const stored = (await this.#s.store.stat(id, { fresh: true }))?.identity?.recordingSid;
      if (options.onlyRecording !== undefined && stored !== undefined && stored !== options.onlyRecording) {
        return null;
      }
      const recordingSid = stored ?? options.onlyRecording ?? '';
      // Nothing of a purged or deleted recording stays, not even a crashed download's generation.
      const size = (await this.#s.store.remove(id, { everyGeneration: true })) ?? null;
      // A variant nobody asked for is no news; the canonical file is reported either way.
      if (size === null && !canonical) return null;
      log.info({ event: 'recording_removed', reason, size }, 'Removed the local copy of a recording');
      try {
        this.#s.onEvent?.({ event: 'recording_removed', reason, size, callSid: id, recordingSid });
      } catch {
        // Metrics must never break serving.
      }
      return size;
    } finally {
      await lock.unlock();
    }
  }

  /**
   * Peaks are never kept beside a recording kept encrypted: they are measured from its plaintext, and
   * would outlive the business's key. Each waveform then opens the recording (and needs the key).
   */
  async readPeaks(ref: RecordingRef): Promise<string | undefined> {
    if (await this.#keptEncrypted(ref)) return undefined;
    return this.#s.store.readPeaks?.(cacheKeyOf(ref));
  }

  async writePeaks(ref: RecordingRef, text: string): Promise<boolean> {
    if (await this.#keptEncrypted(ref)) return false;
    await this.#s.store.writePeaks?.(cacheKeyOf(ref), text);
    return true;
  }

  /** Whether the recording's bytes (its download's, or its finished file's) are kept encrypted. */
  async #keptEncrypted(ref: RecordingRef): Promise<boolean> {
    const flight = this.#flights.get(cacheKeyOf(ref))?.flight;
    if (flight?.encryption !== undefined) return true;
    const final = await this.#final(ref);
    if (final !== undefined) return final.identity?.encryption !== undefined;
    return (await this.#s.store.readMeta(cacheKeyOf(ref)))?.encryption !== undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const entries = [...this.#flights.values()];
    for (const { flight } of entries) {
      if (flight.state === 'running') flight.cancel(createError('RECGATE_SHUTTING_DOWN'));
    }
    await Promise.allSettled(entries.map((e) => e.done));
    await this.#s.store.close?.();
  }

  /** The finished file if it holds this recording, looking at the name again when a remembered one does not. */
  async #final(ref: RecordingRef): Promise<FinalInfo | undefined> {
    const { store } = this.#s;
    const key = cacheKeyOf(ref);
    let final = await store.stat(key);
    if (final !== undefined && !holds(final, ref)) final = await store.stat(key, { fresh: true });
    return final !== undefined && holds(final, ref) ? final : undefined;
  }

  /** The flight requests for `ref` may join: one still running, for the same recording. */
  #running(ref: RecordingRef): Entry | undefined {
    const entry = this.#flights.get(cacheKeyOf(ref));
    const flight = entry?.flight;
    return flight?.state === 'running' && !flight.abandoned && flight.ref.recordingSid === ref.recordingSid
      ? entry
      : undefined;
  }

  #start(ref: RecordingRef, log: Logger, businessId: string): Entry {
    const id = cacheKeyOf(ref);
    // A flight of this process that is ending (or one for the call's previous recording) finishes first.
    const previous = this.#flights.get(id);
    const flight = new Flight(ref);
    const event = this.#emitter(log, ref);
    const upstream = this.#s.mediaFor?.(businessId) ?? this.#s.upstream;
    const seekAhead = new SeekAhead({
      flight,
      store: this.#s.store,
      upstream,
      pool: this.#pool,
      pollIntervalMs: this.#s.pollIntervalMs,
      log,
      event,
    });
    flight.onStall((position, end, first) =>
      first ? seekAhead.consider(position, end) : seekAhead.poll(position),
    );
    const ctx: DownloadContext = {
      flight,
      ref,
      store: this.#s.store,
      locker: this.#s.locker,
      upstream,
      seekAhead,
      gate: this.#s.gate,
      businessId,
      settings: {
        lockTimeoutMs: this.#s.lockTimeoutMs,
        pollIntervalMs: this.#s.pollIntervalMs,
        maxResumeAttempts: this.#s.maxResumeAttempts,
        maxLockLosses: MAX_LOCK_LOSSES,
      },
      log,
      event,
    };
    const entry: Entry = { flight, seekAhead, done: Promise.resolve() };
    entry.done = (async () => {
      await previous?.done;
      await runDownload(ctx);
      // A failed flight stays in the map until its lock is released, so the next flight can wait for that,
      // but it is never joined again (see #running).
      if (this.#flights.get(id) === entry) this.#flights.delete(id);
    })();
    this.#flights.set(id, entry);
    return entry;
  }

  /** Reports a recording's events: logged on `log`, then passed to the observer with the recording's SIDs. */
  #emitter(log: Logger, ref: RecordingRef): EmitEvent {
    return (body, message, level = 'info') => {
      log[level](body, message);
      this.#observe({ ...body, callSid: cacheKeyOf(ref), recordingSid: ref.recordingSid });
    };
  }

  #observe(event: CacheEvent): void {
    try {
      this.#s.onEvent?.(event);
    } catch {
      // Metrics must never break serving.
    }
  }
}

/** What a recording's log lines carry: its owner call, its SID, and its variant unless canonical. */
function bindingsOf(ref: RecordingRef): Record<string, string> {
  return {
    callSid: ref.ownerCallSid,
    recordingSid: ref.recordingSid,
    ...(isCanonical(ref.variant) ? {} : { variant: variantSuffix(ref.variant).slice(1) }),
  };
}

/** The GCM tag a recording kept encrypted carries after its bytes: not part of what is served. */
function tagBytes(encryption: StoredEncryption | undefined): number {
  return encryption === undefined ? 0 : GCM_TAG_BYTES;
}

class InflightRecording implements CachedRecording {
  encryption: StoredEncryption | undefined;
  readonly size: number;
  readonly etag: string;
  readonly lastModified: Date;
  readonly outcome: CacheOutcome;
  readonly #ref: RecordingRef;
  readonly #flight: Flight | undefined;
  readonly #store: RecordingStore;
  /** The finished file this request found, which its streams must read and no other. */
  readonly #fileId: string | undefined;

  constructor(
    ref: RecordingRef,
    identity: Identity,
    outcome: CacheOutcome,
    flight: Flight | undefined,
    store: RecordingStore,
    fileId: string | undefined,
  ) {
    this.size = identity.size;
    this.etag = recordingEtag(ref, identity.size);
    this.lastModified = identity.lastModified;
    this.outcome = outcome;
    this.#ref = ref;
    this.#flight = flight;
    this.#store = store;
    this.#fileId = fileId;
  }

  get complete(): boolean {
    return this.#flight === undefined || this.#flight.state === 'complete';
  }

  createReadStream(start: number, end: number): Readable {
    assertRange(start, end, this.size);
    if (end < start) return Readable.from([]);
    const flight = this.#flight;
    if (flight?.state === 'running') return flight.createReadStream(start, end);
    if (flight?.state === 'failed') {
      const failed = new Readable({ read() {} });
      failed.destroy(flight.error);
      return failed;
    }
    return this.#store.createReadStream(cacheKeyOf(this.#ref), start, end, this.#fileId);
  }

  readNow(start: number, end: number): Buffer | undefined {
    if (this.#flight !== undefined && this.#flight.state !== 'complete') return undefined;
    assertRange(start, end, this.size);
    return this.#store.read?.(cacheKeyOf(this.#ref), start, end, this.#fileId);
  }
}
