/**
 * The audit trail of plays: who listened to which call. Every play is one structured log line
 * (`event: "play"`: business, call, recording, bytes sent, status, request id), and, with `--audit-db`, a
 * row of the call log's `plays` table, which `GET /api/admin/calls/{callSid}/plays` reads.
 *
 * Rows are written in batches (every `flushMs`, or at once when `maxBatch` are waiting), so a seeking
 * player's many range requests cost the database one statement a second, not one each. A database that
 * fails keeps its rows queued and is tried again at the next flush; only when `maxPending` rows wait are
 * the oldest dropped, counted in `recgate_audit_plays_total{outcome="dropped"}` and logged, so an outage of
 * the database never grows memory without bound nor stops playback. The log line is written either way.
 */
import type { Logger } from 'pino';
import type { CallLog, PlayRecord } from '../call-log/call-log.js';
import type { Metrics } from './metrics.js';

export interface AuditTrailOptions {
  logger: Logger;
  metrics: Pick<Metrics, 'auditPlays'>;
  /** Where rows go; without it, plays are logged only. */
  callLog?: Pick<CallLog, 'recordPlays'> | undefined;
  /** @default 1000 */
  flushMs?: number;
  /** @default 500 */
  maxBatch?: number;
  /** @default 50000 */
  maxPending?: number;
}

export class AuditTrail {
  readonly #logger: Logger;
  readonly #metrics: Pick<Metrics, 'auditPlays'>;
  readonly #callLog: Pick<CallLog, 'recordPlays'> | undefined;
  readonly #maxBatch: number;
  readonly #maxPending: number;
  #pending: PlayRecord[] = [];
  #flushing: Promise<void> | undefined;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(options: AuditTrailOptions) {
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#callLog = options.callLog;
    this.#maxBatch = options.maxBatch ?? 500;
    this.#maxPending = options.maxPending ?? 50_000;
    if (this.#callLog !== undefined) {
      this.#timer = setInterval(() => void this.flush(), options.flushMs ?? 1000).unref();
    }
  }

  /**
   * Records one play: logged now, stored with the next batch. Never throws. `playedAt` defaults to now; it
   * is only formatted when the play is stored (the log line has its own time).
   */
  play(play: Omit<PlayRecord, 'playedAt'> & { playedAt?: string }, log: Logger = this.#logger): void {
    log.info(
      {
        event: 'play',
        businessId: play.businessId,
        callSid: play.callSid,
        recordingSid: play.recordingSid,
        bytes: play.bytes,
        status: play.status,
        requestId: play.requestId,
      },
      'recording played',
    );
    this.#metrics.auditPlays.inc({ outcome: 'logged' });
    if (this.#callLog === undefined) return;
    this.#pending.push({ ...play, playedAt: play.playedAt ?? new Date().toISOString() });
    if (this.#pending.length > this.#maxPending) {
      const dropped = this.#pending.splice(0, this.#pending.length - this.#maxPending);
      this.#metrics.auditPlays.inc({ outcome: 'dropped' }, dropped.length);
      this.#logger.error(
        { event: 'audit_dropped', count: dropped.length, oldest: dropped[0]?.playedAt },
        'The plays table cannot keep up; dropped the oldest queued plays (they are in the log)',
      );
    }
    if (this.#pending.length >= this.#maxBatch) void this.flush();
  }

  /** Writes what is queued, batch by batch; resolves once written or failed (a failure keeps the rows). */
  flush(): Promise<void> {
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  /** Stops the timer and writes what is queued. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  async #drain(): Promise<void> {
    const callLog = this.#callLog;
    if (callLog === undefined) return;
    while (this.#pending.length > 0) {
      const batch = this.#pending.slice(0, this.#maxBatch);
      try {
        await callLog.recordPlays(batch);
      } catch (err) {
        this.#logger.warn(
          { err, event: 'audit_write_failed', queued: this.#pending.length },
          'Could not write plays to the plays table; will try again',
        );
        return;
      }
      // Rows queued meanwhile stay; those written go (a drop meanwhile only removed older ones).
      const written = new Set(batch);
      this.#pending = this.#pending.filter((p) => !written.has(p));
      this.#metrics.auditPlays.inc({ outcome: 'stored' }, batch.length);
    }
  }
}
