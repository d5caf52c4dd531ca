/**
 * {@link Admission} across hosts: this process's fair queue and cap (`local.ts`), then one of `slots` slots
 * that every host sharing the PostgreSQL database counts against.
 *
 * A slot is a session-level advisory lock on the two-int key `(namespace, slot)`, held on a pooled
 * connection of its own for as long as the download runs. Why advisory locks rather than a lease table:
 * PostgreSQL releases them when the session ends, so a host that crashes or drops off the network gives its
 * slots back by itself, with no lease length to guess, no renewal traffic and no clean-up job; and a waiter
 * that gives up leaves nothing behind. The two-int form never collides with the recording locks (one bigint
 * key each, `lock/postgres.ts`), and the namespace (a hash of the schema) keeps deployments apart.
 *
 * A waiter with a local permit polls for a free slot every `pollIntervalMs` (plus jitter): one query that
 * tries the slots in turn from a random start and stops at the first it gets. Across hosts the order is
 * whoever polls first, not round-robin; fairness between businesses holds within each host, where the
 * queue is. A slot whose session dies under a running download is lost at once, so for a moment the hosts
 * may run one more download than the cap; the cap is a bound on load, not a correctness guarantee.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { isPostgresUrl } from '../../config/database-url.js';
import { createError } from '../../errors.js';
import type { Admission, AdmissionEvent, AdmissionObserver, AdmissionPermit } from './admission.js';
import { LocalAdmission, type LocalAdmissionOptions } from './local.js';

export interface PostgresAdmissionOptions extends LocalAdmissionOptions {
  /** `postgres://` URL of the database the hosts share (the call log's). */
  connectionString: string;
  /** Slots shared by every host: downloads at once across all of them. At least 1. */
  slots: number;
  /** Keeps the slots of deployments sharing one database apart (the call log's schema). @default '' */
  namespace?: string;
  /** Pause between two tries for a slot, ms; a random jitter of up to half is added. @default 50 */
  pollIntervalMs?: number;
}

/** Tries the slots from `$3` on, wrapping around, and returns the first taken (none: no row). */
const TRY_SLOT = `
  SELECT slot FROM (SELECT (s + $3::int) % $2::int AS slot FROM generate_series(0, $2::int - 1) AS s) AS t
  WHERE pg_try_advisory_lock($1::int, slot) LIMIT 1`;
const UNLOCK = 'SELECT pg_advisory_unlock($1::int, $2::int)';

export class PostgresAdmission implements Admission {
  readonly #local: LocalAdmission;
  readonly #pool: pg.Pool;
  readonly #slots: number;
  readonly #namespace: number;
  readonly #pollIntervalMs: number;
  readonly #timeoutMs: number;
  readonly #retryAfterS: number;
  readonly #onEvent: AdmissionObserver | undefined;
  /** How to give back each connection checked out now. */
  readonly #clients = new Set<(err?: Error) => void>();
  #closed = false;

  constructor(options: PostgresAdmissionOptions) {
    if (typeof options?.connectionString !== 'string' || !isPostgresUrl(options.connectionString)) {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    if (!Number.isSafeInteger(options.slots) || options.slots < 1) {
      throw new TypeError('options.slots must be an integer >= 1');
    }
    const poll = options.pollIntervalMs ?? 50;
    if (!Number.isSafeInteger(poll) || poll < 1) {
      throw new TypeError('options.pollIntervalMs must be an integer >= 1');
    }
    // A grant counts once the shared slot is taken too; the local queue reports the rest.
    const onEvent = options.onEvent;
    this.#onEvent = onEvent;
    this.#local = new LocalAdmission({
      ...options,
      onEvent: onEvent && ((event) => event.kind !== 'granted' && onEvent(event)),
    });
    this.#slots = options.slots;
    this.#pollIntervalMs = poll;
    this.#timeoutMs = options.timeoutMs;
    this.#retryAfterS = options.retryAfterS ?? 5;
    this.#namespace = createHash('sha256')
      .update(`recgate:upstream-slot:${options.namespace ?? ''}`)
      .digest()
      .readInt32BE(0);
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      // One connection per local permit: each holds or polls for one slot.
      max: options.concurrency,
      keepAlive: true,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: 5000,
      application_name: 'recgate-admission',
    });
    this.#pool.on('error', () => {});
  }

  async acquire(businessId: string, signal?: AbortSignal): Promise<AdmissionPermit> {
    const started = performance.now();
    const local = await this.#local.acquire(businessId, signal);
    try {
      const slot = await this.#slot(started + this.#timeoutMs, signal);
      this.#report({ kind: 'granted', waitMs: performance.now() - started });
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          slot();
          local.release();
        },
      };
    } catch (err) {
      this.#report({ kind: 'rejected', reason: signal?.aborted ? 'abandoned' : 'timeout' });
      local.release();
      throw err;
    }
  }

  stats(): { active: number; queued: number } {
    return this.#local.stats();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#local.close();
    // Slots still held are given up with their sessions; nothing may download after close.
    for (const drop of [...this.#clients]) drop(new Error('admission closed'));
    await this.#pool.end();
  }

  /** Takes a shared slot by `deadline`; returns what frees it. */
  async #slot(deadline: number, signal: AbortSignal | undefined): Promise<() => void> {
    const client = await this.#pool.connect().catch((err: unknown) => {
      throw createError('RECGATE_DATABASE_ERROR', { cause: err });
    });
    // A checked-out connection that breaks must not crash the process; its slot is freed by the server.
    const onError = () => {};
    client.on('error', onError);
    let dropped = false;
    const drop = (err?: Error) => {
      if (dropped) return;
      dropped = true;
      this.#clients.delete(drop);
      client.off('error', onError);
      client.release(err);
    };
    this.#clients.add(drop);
    try {
      for (;;) {
        if (signal?.aborted) throw signal.reason;
        const start = Math.floor(Math.random() * this.#slots);
        const got = await client.query<{ slot: number }>(TRY_SLOT, [this.#namespace, this.#slots, start]);
        const slot = got.rows[0]?.slot;
        if (slot !== undefined) return () => this.#free(client, slot, drop);
        const pause = this.#pollIntervalMs + Math.random() * (this.#pollIntervalMs / 2);
        if (performance.now() + pause > deadline) {
          throw createError('RECGATE_UPSTREAM_BUSY', {
            message: 'Waited too long for a turn to fetch the recording from the provider; try again shortly',
            headers: { 'retry-after': String(this.#retryAfterS) },
          });
        }
        await sleep(pause, undefined, signal === undefined ? undefined : { signal }).catch(() => {
          throw signal!.reason;
        });
      }
    } catch (err) {
      drop();
      throw err;
    }
  }

  #report(event: AdmissionEvent): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // Metrics must never break admission.
    }
  }

  /** Unlocks the slot and pools the connection; a connection that fails to unlock is dropped instead. */
  #free(client: pg.PoolClient, slot: number, drop: (err?: Error) => void): void {
    if (!this.#clients.has(drop)) return;
    client.query(UNLOCK, [this.#namespace, slot]).then(
      () => drop(),
      (err: unknown) => drop(err instanceof Error ? err : new Error(String(err))),
    );
  }
}
