/**
 * Upstream admission: how many recording downloads may talk to the upstream at once, and who goes next when
 * none may. The recording cache asks for a permit only when this process is about to download a recording
 * itself (not for a cache hit, nor for a request that joins a download in flight or follows another
 * process's), and returns it when the download ends.
 *
 * Implementations, beside this file: `local.ts` (a per-process cap with a queue fair across businesses) and
 * `postgres.ts` (N slots shared by every host through PostgreSQL advisory locks, handed out in one order
 * fair across businesses over all the hosts). Both keep their waiters in `queue.ts` and pass the contract
 * suite in test/recordings/admission-contract.ts.
 */

/** A granted slot. `release()` frees it for the next waiter; calling it again does nothing. */
export interface AdmissionPermit {
  release(): void;
}

/** Why a wait for a slot ended without one. */
export type AdmissionRejection = 'queue_full' | 'timeout' | 'abandoned';

/** What an admission reports, for metrics. Exceptions the observer throws are ignored. */
export type AdmissionEvent =
  /** A waiter got a slot after `waitMs` (0, or a round trip to the shared database, when one was free). */
  | { kind: 'granted'; waitMs: number }
  /** A waiter left without a slot. */
  | { kind: 'rejected'; reason: AdmissionRejection }
  /** `queued` or `active` changed. */
  | { kind: 'changed'; queued: number; active: number };

export type AdmissionObserver = (event: AdmissionEvent) => void;

export interface Admission {
  /**
   * Resolves with a permit once a slot is free and it is `businessId`'s turn. Waiters are served round-robin
   * over the businesses that have someone waiting: the business served longest ago (a business new to the
   * queue first) goes next, so one business's backlog delays another's request by about one slot turnover
   * (each implementation states its exact bound).
   *
   * Rejects with RECGATE_UPSTREAM_BUSY (with `Retry-After`) when the queue is full and this business holds
   * the most places in it (a business with fewer places pushes out the newest waiter of the business with
   * the most instead), or after waiting the configured timeout; with `signal`'s reason when it aborts, and
   * then the waiter has left the queue.
   */
  acquire(businessId: string, signal?: AbortSignal): Promise<AdmissionPermit>;

  /** Slots in use and requests waiting in this process now. */
  stats(): { active: number; queued: number };

  /** Rejects every waiter with RECGATE_SHUTTING_DOWN and frees what the admission holds (connections). */
  close(): Promise<void>;
}
