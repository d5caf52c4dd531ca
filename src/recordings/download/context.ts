/**
 * What every step of a download (see `run.ts`) works with: the flight it serves, the recording, the backends
 * and the settings. Built once per flight by the cache; steps keep their own state to themselves.
 */
import type { Logger } from 'pino';
import type { Upstream } from '../../upstream/upstream.js';
import type { UpstreamGate } from '../admission/gate.js';
import type { RecordingRef } from '../cache.js';
import type { EmitEvent } from '../events.js';
import type { Flight, Identity } from '../flight.js';
import type { Locker } from '../lock/lock.js';
import type { SeekAhead } from '../seek-ahead.js';
import type { FinalInfo, PartialMeta, RecordingStore } from '../store/store.js';

export interface DownloadSettings {
  /** How long a follower waits while nothing moves before RECGATE_LOCK_TIMEOUT. */
  lockTimeoutMs: number;
  /** How often a follower looks at the other process's download. */
  pollIntervalMs: number;
  /** How often one download retries after its body breaks off. */
  maxResumeAttempts: number;
  /** How often one flight goes back to following after losing its lock, before it fails. */
  maxLockLosses: number;
}

export interface DownloadContext {
  readonly flight: Flight;
  readonly ref: RecordingRef;
  readonly store: RecordingStore;
  readonly locker: Locker;
  readonly upstream: Pick<Upstream, 'fetchMedia'>;
  readonly seekAhead: SeekAhead;
  /** Breaker, cold-download rate limit and admission queue, passed before this process downloads. */
  readonly gate: UpstreamGate;
  /** The business of the request that started the flight (its turn in the admission queue). */
  readonly businessId: string;
  readonly settings: DownloadSettings;
  readonly log: Logger;
  /** Logs a cache event and passes it to the cache's observer. */
  readonly event: EmitEvent;
}

/** Whether a finished file holds the recording asked for; a file of unknown identity holds none. */
export function holds(info: FinalInfo, ref: RecordingRef): boolean {
  return info.identity?.recordingSid === ref.recordingSid;
}

/** What readers are promised about a generation: its size and dates. */
export function identityOf(meta: PartialMeta, size: number): Identity {
  const upstream = meta.lastModified === null ? Number.NaN : Date.parse(meta.lastModified);
  const when = Number.isNaN(upstream) ? Date.parse(meta.startedAt) : upstream;
  // HTTP dates have one-second resolution; the final file's mtime is set to the same whole second.
  return { size, lastModified: new Date(Math.floor(when / 1000) * 1000), upstreamEtag: meta.etag };
}
