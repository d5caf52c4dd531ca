/**
 * What the recording cache tells its observer, as one discriminated union on `event`. Each event is also
 * logged, with the same fields, by the request (or download) that caused it. Every event names the
 * recording: `callSid` (the owner call, whose file it is) and `recordingSid`.
 *
 * A download starts with `cache_miss` (or `takeover`) and ends with `recording_saved` or a `download_failed`
 * whose `phase` is `download`. Each `seek_ahead` or `seek_ahead_discarded` stands for exactly one upstream
 * media request of kind "slice". `observability/metrics.ts` maps them to Prometheus metrics.
 */

/** Why a recording's local copy is removed. */
export type RemoveReason = 'purge' | 'upstream_deleted';

/** The fields that name the recording an event is about. */
export interface EventSubject {
  callSid: string;
  /** Empty only for a `recording_removed` of a recording nobody could name (nothing was stored). */
  recordingSid: string;
}

/** An event as its emitter states it; the cache adds the {@link EventSubject}. */
export type CacheEventBody =
  /** A request found the finished file. */
  | { event: 'cache_hit'; size: number }
  /** This process starts the download; `leftover`: bytes an earlier holder left that it resumes from. */
  | { event: 'cache_miss'; leftover?: number }
  /** Another process downloads; this one follows it. */
  | { event: 'lock_wait' }
  /** The file another process downloaded is final. */
  | { event: 'available_while_waiting'; size: number }
  /**
   * The recording is stored. `size`: recording bytes; `bytes`: bytes this download fetched from the upstream
   * (less than `size` after a resume); `durationMs`; `ttfbMs`: to the first exchange's headers.
   */
  | { event: 'recording_saved'; size: number; bytes: number; durationMs: number; ttfbMs: number }
  /**
   * `phase`: `download` (this process's download failed; also when it lost its lock and goes back to
   * following), `wait` (a wait on another process failed, such as a lock timeout), or `admit` (it was
   * refused before it started: breaker open, rate limit, admission queue full or timed out, or abandoned). `code`: the
   * RecgateError code; `err`: the cause, for the log.
   */
  /**
   * Everything stored for the recording was removed: `reason` says why (`purge`: an operator's purge;
   * `upstream_deleted`: Twilio reported it deleted); `size`: the finished file's bytes, or `null` if there was
   * none (only partials, or nothing).
   */
  | { event: 'recording_removed'; reason: RemoveReason; size: number | null }
  | { event: 'download_failed'; code: string; phase: 'wait' | 'admit' | 'download'; err: unknown }
  /** The lock came free without a final file: this process takes the download over. `received`: bytes seen. */
  | { event: 'takeover'; received: number }
  /** A download continues from `offset` (a resumed exchange, or a complete leftover found). */
  | { event: 'download_resumed'; offset: number }
  /**
   * One slice request ended: `offset` (its first byte), `end` (exclusive end of what it put on disk),
   * `bytes` (body bytes received), `ttfbMs`, `durationMs`, and `error` (a RecgateError code) when it failed
   * midway.
   */
  | {
      event: 'seek_ahead';
      offset: number;
      end: number;
      bytes: number;
      ttfbMs: number;
      durationMs: number;
      error?: string;
    }
  /**
   * A slice request whose body nobody used. `reason`: `no_range` (the upstream answered 200 or the download
   * serves no ranges) or `validator_mismatch` (ETag, Last-Modified or size differ from the download's), both
   * of which end seek-ahead for the recording; or `superseded` (an early slice no longer needed). With
   * `offset`, `bytes`, and for a mismatch `status`, `etag`, `expectedEtag`.
   */
  | {
      event: 'seek_ahead_discarded';
      reason: string;
      offset: number;
      bytes: number;
      status?: number;
      etag?: string | null;
      expectedEtag?: string | null;
    };

export type CacheEvent = CacheEventBody & EventSubject;

export type CacheEventName = CacheEvent['event'];

/** Observer of cache events, for metrics; called after the event is logged. Exceptions it throws are ignored. */
export type CacheEventHandler = (event: CacheEvent) => void;

/** How an emitter reports an event: the body, the log message, and the level (`info` by default). */
export type EmitEvent = (event: CacheEventBody, message: string, level?: 'info' | 'warn') => void;
