/**
 * The recording cache as the HTTP layer sees it: hand it a resolved recording, get back a byte source that
 * serves from disk, or from the one download in flight for that recording, whichever process runs it.
 */
import type { Logger } from 'pino';
import type { LazySignal } from '../io/abort.js';
import type { ByteSource } from '../serving/source.js';
import type { CallSid, RecordingSid } from '../sid.js';
import type { RemoveReason } from './events.js';
import type { StoredEncryption } from './store/store.js';
import { type Variant, variantKey } from './variant.js';

export interface RemoveOptions {
  /** Ends the wait for a download in progress and for the lock (then RECGATE_LOCK_TIMEOUT). */
  signal?: AbortSignal | undefined;
  log?: Logger | undefined;
  /**
   * The recording the caller means. The file is removed only if it holds this recording (or nothing says
   * which it holds); another recording of the same call stays. Named in the event when the file is gone.
   */
  onlyRecording?: RecordingSid | undefined;
}

export interface RecordingRef {
  /** The call that owns the recording; the file is `{ownerCallSid}.mp3`. */
  ownerCallSid: CallSid;
  recordingSid: RecordingSid;
  /**
   * The Twilio account the recording was found in (`AC…`), which the download then reads it from: the
   * requesting business's account (src/accounts/). Omitted: the main account.
   */
  account?: string | undefined;
  /**
   * Which rendition (see `variant.ts`): each is a cache entry of its own, `{ownerCallSid}.dual.mp3`,
   * `{ownerCallSid}.wav`, … @default the canonical mono MP3
   */
  variant?: Variant | undefined;
}

/** The key of the cache entry `ref` names: the lock id, flight key, cache-index row and store id. */
export function cacheKeyOf(ref: RecordingRef): string {
  return variantKey(ref.ownerCallSid, ref.variant);
}

/** Throws a RangeError unless `start`-`end` are whole offsets within a `size`-byte recording. */
export function assertRange(start: number, end: number, size: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end >= size) {
    throw new RangeError(`bytes ${start}-${end} are outside 0-${size - 1}`);
  }
}

/** How a request was served: from a finished file, by starting the download, or by joining one. */
export type CacheOutcome = 'hit' | 'miss' | 'wait';

export interface CachedRecording extends ByteSource {
  readonly outcome: CacheOutcome;
  /** Whether every byte is already on disk under the final name. */
  readonly complete: boolean;
  /**
   * Set when the bytes are the ciphertext and GCM tag of an encrypted recording kept so on disk
   * (`--store-encrypted`); sizes then count the tag. The cache's `open()` never returns one: it hands it to
   * its `decryptStored` (`decrypt/at-rest.ts`), which answers a plaintext view. @default absent
   */
  readonly encryption?: StoredEncryption | undefined;
}

export type CacheState =
  | { state: 'cached'; size: number }
  | { state: 'downloading'; size: number | null; received: number }
  | { state: 'absent' };

export interface OpenOptions {
  /**
   * Ends this caller's wait for the size or the lock (never a download other requests share): `open()` then
   * rejects with the signal's reason. A function is called only when the caller may wait: a cached file is
   * opened without it.
   */
  signal?: LazySignal | undefined;
  /** Request-scoped logger for the cache's events. */
  log?: Logger | undefined;
  /**
   * The first byte the caller will read, when it knows it before the size (a `Range: bytes=N-…` request).
   * Optional: reads far ahead get seek-ahead slices anyway once `createReadStream` asks for them; given here,
   * the first slice of a cold recording goes out together with the download's own request instead of after
   * its headers, which saves one upstream first-byte time.
   */
  readStart?: number | undefined;
  /**
   * The business the request is for. When this request makes the process download the recording, the
   * business's cold-download rate limit applies and it waits its turn in the upstream admission queue, which
   * is fair across businesses. @default '' (one anonymous business)
   */
  businessId?: string | undefined;
}

export interface RecordingCache {
  /**
   * Resolves once the recording's size is known: at once for a cached file, or when the upstream's headers
   * for the single download arrive. Starts that download if no process on the host (or, with a shared
   * lock backend, on any host) is running it. Throws RecgateError for upstream failures
   * (RECGATE_RECORDING_GONE, RECGATE_RECORDING_NOT_READY, RECGATE_UPSTREAM_*), storage failures
   * (RECGATE_STORAGE_FULL, RECGATE_STORAGE_ERROR), lock timeouts (RECGATE_LOCK_TIMEOUT), and when it would
   * start a download: RECGATE_UPSTREAM_THROTTLED (the upstream breaker is open), RECGATE_RATE_LIMITED (the
   * business's cold-download rate) and RECGATE_UPSTREAM_BUSY (the admission queue is full or its wait ran
   * out); for an encrypted recording (with the gateway's decryption), RECGATE_RECORDING_ENCRYPTED (no key
   * opens it; with a recording kept encrypted on disk, also for a finished file) and
   * RECGATE_RECORDING_TAMPERED (it failed its integrity check). A request that finds the file, joins a download or follows another process's never waits for
   * admission.
   */
  open(ref: RecordingRef, options?: OpenOptions): Promise<CachedRecording>;

  /**
   * Optional. {@link open}'s answer at once when it needs no waiting (a finished file the cache trusts now:
   * the warm play), with `open`'s errors thrown; `undefined` means "call `open`", not "not cached".
   */
  openNow?(ref: RecordingRef, options?: OpenOptions): CachedRecording | undefined;

  /**
   * Optional. {@link open}'s answer when this process is running (or following) the recording's download
   * now, without starting one: `undefined` at once when none runs, else once the download's size is known,
   * with `open`'s errors. For a HEAD, which must not start a download but can share a running one's
   * response instead of asking the upstream again.
   */
  openRunning?(ref: RecordingRef, options?: OpenOptions): Promise<CachedRecording | undefined>;

  /** What is on disk for the recording now, for the UI's "cached / downloading n% / not yet fetched". */
  state(ref: RecordingRef): Promise<CacheState>;

  /**
   * Whether a recording could be stored now (a file can be created in the recordings store); for readiness.
   * Cached briefly, so probes cost little.
   */
  writable(): Promise<boolean>;

  /**
   * Removes everything stored for the recording of owner call `ownerCallSid`, every variant of it (see
   * `LocalCache.remove`); resolves to the finished files' total size, or `null` when there was none. With
   * `onlyRecording`, a finished file holding another recording is left alone (counts nothing).
   */
  remove(ownerCallSid: CallSid, reason: RemoveReason, options?: RemoveOptions): Promise<number | null>;

  /**
   * Peaks stored beside the recording's finished file (the text `writePeaks` stored), or `undefined`.
   * Optional: without it (and `writePeaks`), peaks are computed for every request.
   */
  readPeaks?(ref: RecordingRef): Promise<string | undefined>;

  /**
   * Stores peaks computed from the finished file, atomically; removed with the file (purge, eviction).
   * Resolves to `false` when it keeps none and nothing may reuse them (a recording kept encrypted: every
   * waveform must open it, with the business's key).
   */
  writePeaks?(ref: RecordingRef, text: string): Promise<boolean | undefined>;

  /** Aborts downloads this process runs (their temporary files stay for a takeover) and frees handles. */
  close(): Promise<void>;
}
