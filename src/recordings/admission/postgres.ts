/**
 * {@link Admission} across hosts: at most `slots` downloads at once over every host sharing the PostgreSQL
 * database (and at most `concurrency` in this process), with one queue order for all of them: the next free
 * slot goes to the waiting business served longest ago, on whichever host it waits.
 *
 * Three things live in PostgreSQL, two of them as session-level advisory locks, which PostgreSQL drops when
 * the session ends: a host that crashes or drops off the network gives back its slots and stops waiting by
 * itself, with no lease length to guess, no renewal traffic and no clean-up job.
 * - A slot is the exclusive lock `(namespace, slot)`, held on a pooled connection of its own for as long as
 *   the download runs. Two-int keys never collide with the recording locks (one bigint key each,
 *   `lock/postgres.ts`), and the namespace (a hash of the schema) keeps deployments apart.
 * - "Business X waits on this host" is the shared lock `(waitNamespace, key(X))`, held by the host's pump
 *   connection while X has a request in this host's queue and the host has room under `concurrency`.
 *   `pg_locks` therefore lists the businesses waiting anywhere, and only on live sessions.
 * - The table `upstream_turns` keeps when each business was last served (and, until then, when it first
 *   waited): the order of the queue. It only orders; a lost or stale row can reorder, never block.
 *
 * While requests wait, one pump per host polls every `pollIntervalMs` (plus jitter), and at once when one of
 * its own slots comes back: it publishes its waiting businesses, reads the free slots and every waiting
 * business in turn order (never served first, in the order they first waited; then served longest ago),
 * and deals the free slots round-robin down that list. It takes only the slots dealt to its own businesses,
 * stamping the business as served in the same statement.
 *
 * The bound: a request of business B, which had nobody waiting, gets one of the first slots that free once
 * every host's pump has seen B published, which is at most one poll interval (plus a round trip) after the
 * request joined its host's queue. So B waits one global slot turnover, plus the slots that freed during
 * that interval, however large another business's backlog and however many hosts share it. A host whose
 * `concurrency` is all in use publishes nothing (a slot dealt to it would idle), so there B first waits for
 * one of that host's downloads to end.
 *
 * A slot whose session dies under a running download is lost at once, so for a moment the hosts may run
 * more downloads than the cap; the cap is a bound on load, not a correctness guarantee. A pump connection
 * that breaks after a good round is replaced at once; when PostgreSQL cannot be reached, the requests
 * waiting in this process are refused with RECGATE_DATABASE_ERROR and the next request tries again.
 * Downloads in flight go on, and cached recordings never come here.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { SCHEMA_NAME } from '../../call-log/schema-pool.js';
import { isPostgresUrl } from '../../config/database-url.js';
import { createError } from '../../errors.js';
import type { Admission, AdmissionEvent, AdmissionObserver, AdmissionPermit } from './admission.js';
import type { LocalAdmissionOptions } from './local.js';
import { checkInt, WaitQueue } from './queue.js';

export interface PostgresAdmissionOptions extends LocalAdmissionOptions {
  /** `postgres://` URL of the database the hosts share (the call log's). */
  connectionString: string;
  /** Slots shared by every host: downloads at once across all of them. At least 1. */
  slots: number;
  /** Keeps the slots of deployments sharing one database apart (the call log's schema). @default '' */
  namespace?: string;
  /** Schema of the `upstream_turns` table (the call log's). @default the server's default search_path */
  schema?: string | undefined;
  /** Pause between two rounds of the pump while requests wait, ms; a jitter of up to half is added. @default 50 */
  pollIntervalMs?: number;
}

const TURNS_TABLE = `CREATE TABLE IF NOT EXISTS upstream_turns (
  namespace integer NOT NULL,
  business integer NOT NULL,
  waited timestamptz NOT NULL DEFAULT clock_timestamp(),
  served timestamptz,
  PRIMARY KEY (namespace, business))`;

/** Starts waiting for the businesses `$2` (keys): one shared lock each. */
const PUBLISH = 'SELECT pg_advisory_lock_shared($1::int, key) FROM unnest($2::int[]) AS key';
/** Stamps the businesses `$2` with when they first waited, if they have no row yet. */
const FIRST_WAITED = `
  INSERT INTO upstream_turns (namespace, business) SELECT $1::int, key FROM unnest($2::int[]) AS key
  ON CONFLICT DO NOTHING`;
const UNPUBLISH = 'SELECT pg_advisory_unlock_shared($1::int, key) FROM unnest($2::int[]) AS key';

/**
 * Every business waiting on a live session, in turn order, with the slots held now (`$3` slots). Advisory
 * two-int keys show in `pg_locks` as (classid, objid) with objsubid 2. Keys are compared as bigint: the
 * server may cast `objid` of other rows (a recording lock's, any of 2^32) before it filters them out.
 */
const TURNS = `
  WITH mine AS (SELECT oid FROM pg_database WHERE datname = current_database()),
  waiting AS (
    SELECT DISTINCT objid::bigint AS key FROM pg_locks
    WHERE locktype = 'advisory' AND database = (SELECT oid FROM mine) AND classid = $2::int::oid
      AND objsubid = 2 AND granted AND mode = 'ShareLock'),
  held AS (
    SELECT count(*)::int AS n FROM pg_locks
    WHERE locktype = 'advisory' AND database = (SELECT oid FROM mine) AND classid = $1::int::oid
      AND objsubid = 2 AND granted AND mode = 'ExclusiveLock' AND objid::bigint < $3::int)
  SELECT w.key, (SELECT n FROM held) AS held FROM waiting w
  LEFT JOIN upstream_turns t ON t.namespace = $1::int AND t.business::bigint = w.key
  ORDER BY t.served ASC NULLS FIRST, t.waited ASC NULLS FIRST, w.key`;

/** Tries the slots from `$3` on, wrapping around; stamps business `$4` served if one was taken. */
const TAKE_SLOT = `
  WITH got AS MATERIALIZED (
    SELECT slot FROM (SELECT (s + $3::int) % $2::int AS slot FROM generate_series(0, $2::int - 1) AS s) AS t
    WHERE pg_try_advisory_lock($1::int, slot) LIMIT 1),
  stamp AS (
    INSERT INTO upstream_turns (namespace, business, served) SELECT $1::int, $4::int, clock_timestamp() FROM got
    ON CONFLICT (namespace, business) DO UPDATE SET served = excluded.served)
  SELECT slot FROM got`;
const UNLOCK = 'SELECT pg_advisory_unlock($1::int, $2::int)';

export class PostgresAdmission implements Admission {
  readonly #queue: WaitQueue;
  readonly #pool: pg.Pool;
  readonly #concurrency: number;
  readonly #slots: number;
  readonly #namespace: number;
  readonly #waitNamespace: number;
  readonly #pollIntervalMs: number;
  readonly #onEvent: AdmissionObserver | undefined;
  /** How to give back each slot connection checked out now. */
  readonly #clients = new Set<(err?: Error) => void>();
  /** Business keys published as waiting on the pump's connection. */
  readonly #published = new Set<number>();
  #ready: Promise<void> | undefined;
  #active = 0;
  #pumping = false;
  /** Ends the pump's pause early. */
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(options: PostgresAdmissionOptions) {
    if (typeof options?.connectionString !== 'string' || !isPostgresUrl(options.connectionString)) {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    this.#concurrency = checkInt('concurrency', options.concurrency, 1);
    this.#slots = checkInt('slots', options.slots, 1);
    this.#pollIntervalMs = checkInt('pollIntervalMs', options.pollIntervalMs ?? 50, 1);
    const { schema } = options;
    if (schema !== undefined && (typeof schema !== 'string' || !SCHEMA_NAME.test(schema))) {
      throw new TypeError('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
    }
    this.#onEvent = options.onEvent;
    this.#queue = new WaitQueue({
      maxQueue: options.maxQueue,
      timeoutMs: options.timeoutMs,
      retryAfterS: options.retryAfterS,
      onOutcome: (outcome) => this.#report(outcome),
      onChange: () => this.#changed(),
    });
    // The key hosts of earlier versions use too, so that during an upgrade every host counts against one cap.
    this.#namespace = createHash('sha256')
      .update(`recgate:upstream-slot:${options.namespace ?? ''}`)
      .digest()
      .readInt32BE(0);
    this.#waitNamespace = hashKey(`recgate:upstream-wait:${options.namespace ?? ''}`);
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      // The pump's connection, and one per slot this process holds.
      max: this.#concurrency + 1,
      keepAlive: true,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: 5000,
      application_name: 'recgate-admission',
      // The schema name was checked against SCHEMA_NAME, so it needs no quoting.
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    this.#pool.on('error', () => {});
  }

  acquire(businessId: string, signal?: AbortSignal): Promise<AdmissionPermit> {
    if (this.#closed) return Promise.reject(createError('RECGATE_SHUTTING_DOWN'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    // Even with a slot free here, the turn may be another host's business: every request goes through the
    // pump. The ones this process could still run under both caps do not count against `maxQueue`.
    const spare = Math.max(0, Math.min(this.#concurrency, this.#slots) - this.#active);
    const waiting = this.#queue.wait(businessId, signal, spare);
    this.#kick();
    return waiting;
  }

  stats(): { active: number; queued: number } {
    return { active: this.#active, queued: this.#queue.size };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.refuseAll(createError('RECGATE_SHUTTING_DOWN'));
    this.#wake?.();
    // Slots still held are given up with their sessions; nothing may download after close.
    for (const drop of [...this.#clients]) drop(new Error('admission closed'));
    await this.#pool.end();
  }

  /** Starts the pump if requests wait and it is not running. */
  #kick(): void {
    if (this.#pumping || this.#closed || this.#queue.size === 0) return;
    this.#pumping = true;
    void this.#pump();
  }

  /** Runs rounds while requests wait. */
  async #pump(): Promise<void> {
    try {
      while (await this.#session()) {
        // The connection broke after a good round (killed, or the server restarted): go on with a new one.
      }
    } finally {
      this.#pumping = false;
      // Requests that came in while the pump was ending.
      this.#kick();
    }
  }

  /**
   * One pump connection's rounds, until nobody waits. Returns true when the connection broke after at least
   * one round, so another may do better; a failure before any round means the database is unreachable, and
   * every waiter is refused with RECGATE_DATABASE_ERROR.
   */
  async #session(): Promise<boolean> {
    let client: pg.PoolClient | undefined;
    let rounds = 0;
    // A checked-out connection that breaks must not crash the process; the next query reports it.
    const onError = () => {};
    try {
      client = await this.#pool.connect();
      client.on('error', onError);
      await this.#prepare(client);
      while (!this.#closed && this.#queue.size > 0) {
        await this.#round(client);
        rounds++;
        if (this.#queue.size > 0) await this.#pause();
      }
      await this.#publish(client, []);
      client.off('error', onError);
      client.release();
      return false;
    } catch (err) {
      // Destroyed, not pooled: its session may still hold shared locks, and ending it drops them.
      client?.off('error', onError);
      client?.release(err instanceof Error ? err : new Error(String(err)));
      this.#published.clear();
      if (this.#closed || this.#queue.size === 0) return false;
      if (rounds > 0) return true;
      this.#queue.refuseAll(
        createError('RECGATE_DATABASE_ERROR', {
          message: 'The database the hosts share for upstream admission failed',
          cause: err,
        }),
      );
      return false;
    }
  }

  /** Creates the turns table once per admission (under a lock: concurrent CREATEs can fail). */
  #prepare(client: pg.PoolClient): Promise<void> {
    this.#ready ??= (async () => {
      await client.query('BEGIN');
      try {
        // A key no slot has (slots are 0..slots-1) and, being exclusive, no waiting business either.
        await client.query('SELECT pg_advisory_xact_lock($1::int, -1)', [this.#namespace]);
        await client.query(TURNS_TABLE);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    })();
    return this.#ready.catch((err: unknown) => {
      this.#ready = undefined;
      throw err;
    });
  }

  /** Publishes this host's waiting businesses, then takes the free slots dealt to them. */
  async #round(client: pg.PoolClient): Promise<void> {
    const room = this.#active < this.#concurrency;
    // A host with no room does not wait in the shared order: a slot dealt to it would idle.
    const keys = new Map<number, string>();
    if (room) {
      for (const business of this.#queue.businesses()) {
        const key = businessKey(business);
        if (!keys.has(key)) keys.set(key, business);
      }
    }
    await this.#publish(client, [...keys.keys()]);
    if (keys.size === 0) return;
    // bigint columns come back as strings.
    const turns = await client.query<{ key: string; held: number }>(TURNS, [
      this.#namespace,
      this.#waitNamespace,
      this.#slots,
    ]);
    const waiting = turns.rows.length;
    const free = this.#slots - (turns.rows[0]?.held ?? this.#slots);
    if (waiting === 0 || free <= 0) return;
    for (const [rank, { key }] of turns.rows.entries()) {
      if (rank >= free) break;
      const business = keys.get(Number(key));
      if (business === undefined) continue;
      // Round-robin: with more free slots than businesses waiting, the first ones get one more each.
      const dealt = Math.floor(free / waiting) + (rank < free % waiting ? 1 : 0);
      for (let i = 0; i < dealt; i++) {
        if (this.#closed || this.#active >= this.#concurrency) return;
        const outcome = await this.#take(business);
        if (outcome === 'none') return;
        if (outcome === 'gone') break;
      }
    }
  }

  /**
   * Takes a slot for `business` and hands it to its oldest waiter. 'none': no slot was free after all;
   * 'gone': the business's waiters left meanwhile (the slot is given back).
   */
  async #take(business: string): Promise<'taken' | 'none' | 'gone'> {
    const slot = await this.#slot(business);
    if (slot === undefined) return 'none';
    const give = this.#closed ? undefined : this.#queue.take(business);
    if (give === undefined) {
      slot();
      return 'gone';
    }
    this.#active++;
    this.#changed();
    let released = false;
    give({
      release: () => {
        if (released) return;
        released = true;
        slot();
        this.#active--;
        this.#changed();
      },
    });
    return 'taken';
  }

  /** Checks out a connection and takes a slot on it for `business`; returns what frees it. */
  async #slot(business: string): Promise<(() => void) | undefined> {
    const client = await this.#pool.connect();
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
      const start = Math.floor(Math.random() * this.#slots);
      const got = await client.query<{ slot: number }>(TAKE_SLOT, [
        this.#namespace,
        this.#slots,
        start,
        businessKey(business),
      ]);
      const slot = got.rows[0]?.slot;
      if (slot === undefined) {
        drop();
        return undefined;
      }
      return () => this.#free(client, slot, drop);
    } catch (err) {
      drop(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  /**
   * Unlocks the slot and pools the connection (a connection that fails to unlock is dropped instead, which
   * frees the slot too), then wakes the pump: the slot may be this host's next turn.
   */
  #free(client: pg.PoolClient, slot: number, drop: (err?: Error) => void): void {
    if (!this.#clients.has(drop)) return;
    client.query(UNLOCK, [this.#namespace, slot]).then(
      () => {
        drop();
        this.#wake?.();
      },
      (err: unknown) => {
        drop(err instanceof Error ? err : new Error(String(err)));
        this.#wake?.();
      },
    );
  }

  /** Makes the set of businesses published as waiting `keys`. */
  async #publish(client: pg.PoolClient, keys: number[]): Promise<void> {
    const wanted = new Set(keys);
    const gone = [...this.#published].filter((key) => !wanted.has(key));
    const fresh = keys.filter((key) => !this.#published.has(key));
    if (gone.length > 0) {
      await client.query(UNPUBLISH, [this.#waitNamespace, gone]);
      for (const key of gone) this.#published.delete(key);
    }
    if (fresh.length > 0) {
      await client.query(PUBLISH, [this.#waitNamespace, fresh]);
      for (const key of fresh) this.#published.add(key);
      await client.query(FIRST_WAITED, [this.#namespace, fresh]);
    }
  }

  /** Waits one poll interval (plus jitter), or less when woken. */
  #pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.#pollIntervalMs + Math.random() * (this.#pollIntervalMs / 2));
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }

  #changed(): void {
    this.#report({ kind: 'changed', queued: this.#queue.size, active: this.#active });
  }

  #report(event: AdmissionEvent): void {
    try {
      this.#onEvent?.(event);
    } catch {
      // Metrics must never break admission.
    }
  }
}

/** A non-negative 31-bit advisory-lock key for `text` (so `pg_locks` shows it as written). */
function hashKey(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32BE(0) & 0x7fffffff;
}

/** A business's key in the shared order; two businesses sharing one only share a turn. */
function businessKey(business: string): number {
  return hashKey(`business:${business}`);
}
