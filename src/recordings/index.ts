/**
 * Builds the recording cache. The rest of recgate names only {@link RecordingCache} (`cache.ts`); this file
 * wires the default backends: kernel file locks and a store on the recordings directory.
 *
 * On-disk layout of `dir` (see `store/fs.ts` for the details):
 * - `{callSid}.mp3`: a finished recording; nothing else is ever written under this name;
 * - `.{callSid}.mp3.id`: which recording that file holds (recording SID, upstream ETag), bound to the file;
 *   a file without a matching record is never served, and the next download replaces it;
 * - `.{callSid}.mp3.{gen}.part`: a download attempt (a generation, `gen` 16 random hex digits), renamed to
 *   `{callSid}.mp3` once complete, checked and flushed. Every attempt writes a file of its own, so a holder
 *   that lost its lock can never write into, or publish, another's bytes. The holder writes it sequentially
 *   from byte 0; seek-ahead slices (ranged upstream fetches for far seeks, any process) are written at their
 *   offsets beyond that, so it may be sparse meanwhile;
 * - `.{callSid}.mp3.meta`: the pointer: JSON sidecar of the current generation (its id, upstream size, ETag,
 *   Last-Modified, recording SID), replaced atomically before the generation's first byte is published, so
 *   waiters in other processes and hosts find it and learn the size;
 * - `.{callSid}.mp3.{gen}.frontier`: how far the sequential download got, `{gen} {n} {n}` (16-digit `n`
 *   twice, so a torn read is noticed), rewritten after every append: the only bytes of the partial readable
 *   without the block map;
 * - `.{callSid}.mp3.{gen}.blocks`: the block map of seek-ahead slices, JSON lines appended atomically: a
 *   header (generation, size, ETag, Last-Modified the slices were checked against), then `claim` (a slice
 *   about to be fetched, counted against the per-recording budget), `have` (bytes `[start, end)` are on disk
 *   and checked) and `off` (slices are void: the upstream ignored Range or a validator differed);
 * - `.{callSid}.lock`: the per-recording lock file of the `fs` lock backend, present while a process holds
 *   or waits for the lock.
 *
 * A takeover copies the published bytes (and recorded slices) of the previous generation into its own, and
 * the previous generation's files go. Commits, discards and the sweep remove the rest; a partial from a
 * previous boot is never resumed.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { createError } from '../errors.js';
import type { Upstream } from '../upstream/upstream.js';
import { UpstreamGate, type UpstreamGateOptions } from './admission/gate.js';
import type { CacheEventHandler } from './events.js';
import { type DecryptStored, LocalCache, type LocalRecordingCache } from './local-cache.js';
import { FsLocker } from './lock/fs.js';
import type { Locker } from './lock/lock.js';
import { type SeekAheadOptions, seekAheadSettings } from './seek-ahead.js';
import { FsRecordingStore } from './store/fs.js';
import type { RecordingStore } from './store/store.js';

export type { Admission, AdmissionEvent, AdmissionPermit } from './admission/admission.js';
export type { BreakerFor, BreakerView, GateRequest, UpstreamGateOptions } from './admission/gate.js';
export { LocalAdmission, type LocalAdmissionOptions } from './admission/local.js';
export type {
  CachedRecording,
  CacheOutcome,
  CacheState,
  OpenOptions,
  RecordingCache,
  RecordingRef,
} from './cache.js';
export type { CacheEvent, CacheEventHandler, CacheEventName } from './events.js';
export type { DecryptStored, LocalRecordingCache, SweepResult } from './local-cache.js';
export { FsLocker, type FsLockerOptions } from './lock/fs.js';
export type { Lock, Locker } from './lock/lock.js';
export { SEEK_AHEAD_DEFAULTS, type SeekAheadOptions } from './seek-ahead.js';
export { FsRecordingStore } from './store/fs.js';
export type { RecordingStore } from './store/store.js';

export interface RecordingCacheOptions {
  /** The recordings directory (`{data-dir}/recordings`); created if missing and checked to be writable. */
  dir: string;
  /** Where recordings come from; only `fetchMedia` is used. */
  upstream: Pick<Upstream, 'fetchMedia'>;
  /**
   * The media a download started for a business fetches from instead of `upstream`, made once per
   * download: the gateway decrypts encrypted recordings there (`decrypt/media.ts`). @default `upstream`
   */
  mediaFor?: (businessId: string) => Pick<Upstream, 'fetchMedia'>;
  /**
   * Opens recordings kept encrypted on disk (`--store-encrypted`) for the business reading them: the
   * gateway's `AtRestDecryption.open` (`decrypt/at-rest.ts`). @default none: such a recording answers
   * RECGATE_RECORDING_ENCRYPTED
   */
  decryptStored?: DecryptStored;
  /** Logger for events not tied to a request; requests pass their own to `open()`. */
  logger: Logger;
  /** Lock backend. @default an {@link FsLocker} on `dir` (processes of one host) */
  locker?: Locker;
  /** Store backend. @default an {@link FsRecordingStore} on `dir` */
  store?: RecordingStore;
  /**
   * How long a request may wait on another process's download while nothing moves (no sidecar yet, no new
   * bytes) before failing with RECGATE_LOCK_TIMEOUT. @default 120000
   */
  lockTimeoutMs?: number;
  /**
   * Interval for watching another process's download (partial growth, final file) and for retrying its
   * lock; lower means less latency for cross-process waiters, more `stat` calls. @default 15
   */
  pollIntervalMs?: number;
  /** How often one download retries (resuming with Range when it can) after its body breaks off. @default 3 */
  maxResumeAttempts?: number;
  /**
   * Age after which `sweep()` removes a partial whose lock is free. Partials are never needed for
   * correctness (a later request restarts the download), only to resume one. @default 3600000 (1 hour)
   */
  sweepMaxAgeMs?: number;
  /** Observer of cache events, for metrics (see {@link CacheEventHandler} for the fields). @default none */
  onEvent?: CacheEventHandler;
  /**
   * Ranged upstream fetches for reads far beyond the download's frontier (see `seek-ahead.ts`); `false`
   * turns them off. Each field has its own default ({@link SEEK_AHEAD_DEFAULTS}). @default on
   */
  seekAhead?: SeekAheadOptions | false;
  /**
   * What a download of this process passes before it starts: the upstream breaker (fail fast while it is
   * open), a per-business cold-download rate limit, and the admission queue. Seek-ahead slices belong to an
   * admitted download and take no permit of their own. @default none of them
   */
  gate?: UpstreamGateOptions;
}

/**
 * Creates the cache. Throws TypeError naming the bad option, and RECGATE_STORAGE_ERROR naming the directory
 * when it cannot be created or written (for example a volume mounted with the wrong owner).
 */
export function createRecordingCache(options: RecordingCacheOptions): LocalRecordingCache {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const { dir, upstream, logger } = options;
  if (typeof dir !== 'string' || dir === '') throw new TypeError('options.dir must be a non-empty string');
  if (typeof upstream?.fetchMedia !== 'function') {
    throw new TypeError('options.upstream must implement fetchMedia');
  }
  if (options.mediaFor !== undefined && typeof options.mediaFor !== 'function') {
    throw new TypeError('options.mediaFor must be a function');
  }
  if (options.decryptStored !== undefined && typeof options.decryptStored !== 'function') {
    throw new TypeError('options.decryptStored must be a function');
  }
  if (typeof logger?.child !== 'function') throw new TypeError('options.logger must be a pino logger');
  const lockTimeoutMs = integerOption('lockTimeoutMs', options.lockTimeoutMs, 120_000, 1);
  const pollIntervalMs = integerOption('pollIntervalMs', options.pollIntervalMs, 15, 1);
  const maxResumeAttempts = integerOption('maxResumeAttempts', options.maxResumeAttempts, 3, 0);
  const sweepMaxAgeMs = integerOption('sweepMaxAgeMs', options.sweepMaxAgeMs, 3_600_000, 0);
  if (options.locker !== undefined && typeof options.locker?.newLock !== 'function') {
    throw new TypeError('options.locker must implement newLock');
  }
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function') {
    throw new TypeError('options.onEvent must be a function');
  }
  const seekAhead = seekAheadSettings(options.seekAhead);
  ensureWritableDir(dir);
  return new LocalCache({
    store: options.store ?? new FsRecordingStore({ dir }),
    locker: options.locker ?? new FsLocker({ dir, pollIntervalMs }),
    upstream,
    mediaFor: options.mediaFor,
    decryptStored: options.decryptStored,
    logger,
    lockTimeoutMs,
    pollIntervalMs,
    maxResumeAttempts,
    sweepMaxAgeMs,
    onEvent: options.onEvent,
    seekAhead,
    gate: new UpstreamGate(options.gate),
  });
}

function integerOption(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`options.${name} must be an integer >= ${min}`);
  }
  return value;
}

export function ensureWritableDir(dir: string): void {
  const probe = `${dir}/.recgate-write-check-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(probe, '');
    unlinkSync(probe);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    const uid = process.getuid?.();
    throw createError('RECGATE_STORAGE_ERROR', {
      message: `The recordings directory ${dir} is not writable (${code})${
        uid === undefined ? '' : ` by uid ${uid}`
      }; check the volume's mount and ownership`,
      cause: err,
    });
  }
}
