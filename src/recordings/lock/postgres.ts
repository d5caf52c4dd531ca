/**
 * {@link Locker} for several hosts: a PostgreSQL session-level advisory lock per recording.
 *
 * All the locks a locker holds live on ONE database session (a dedicated connection, opened on first use and
 * replaced after it dies): a session can hold any number of advisory locks, so a process with thousands of
 * downloads waiting for an upstream slot, each holding its recording's lock, still uses one connection, and
 * no request waits for a lock connection before it reaches the admission queue. PostgreSQL releases an
 * advisory lock when the session ends, so a holder that crashes, or whose host drops off the network, loses
 * the lock without anyone guessing staleness. Waiting polls `pg_try_advisory_lock` on the same session with
 * jitter, so an aborted wait leaves nothing behind on the server. Queries on the session run one at a time,
 * in the order they were made.
 *
 * Advisory locks are reentrant within a session, so the locker also keeps the keys this process holds (or is
 * taking): a handle's try fails at once when another handle of the same process has the key, and two handles
 * in one process exclude each other exactly as two processes do.
 *
 * A session can also end under a live holder (failover, a network drop, `idle_session_timeout`, a pooler in
 * transaction mode handing the connection to another backend), and then another host takes the lock over
 * while the first still downloads. So every hold takes a fencing token: right after the advisory lock, the
 * same session increments the key's generation in `recgate_lock_fence (key bigint primary key, generation
 * bigint not null)`, a table the locker creates on first use. `verify()` and the heartbeat ask, in one
 * query, whether this backend (`pg_backend_pid()`) still holds the advisory lock and whether the stored
 * generation is still this hold's; a hold that fails that check is lost alone, and its advisory lock is
 * released. When the session fails (the connection reports an error or ends, or any of its queries fails,
 * including one that takes longer than `queryTimeoutMs`, so a silent server is noticed), every hold on it is
 * lost at once and the session is dropped, never used again; the next try opens a new one.
 *
 * Keys are the first 64 bits of SHA-256("recgate:recording:" + id), so they do not collide with the call
 * log's migration lock or with other applications' advisory locks in practice.
 */
import { createHash, randomInt } from 'node:crypto';
import pg from 'pg';
import { SCHEMA_NAME } from '../../call-log/schema-pool.js';
import { isPostgresUrl } from '../../config/database-url.js';
import { createError } from '../../errors.js';
import { KEY_PATTERN } from '../variant.js';
import { Hold, NEVER_LOST, notHeld } from './hold.js';
import type { Lock, Locker } from './lock.js';

export interface PostgresLockerOptions {
  /** `postgres://` URL of the database the hosts share (usually the call log's). */
  connectionString: string;
  /**
   * Schema of the fencing table `recgate_lock_fence`; it must exist (the call log's migration creates its
   * schema). Same rules as the call log's schema name.
   * @default the server's default search_path (normally `public`)
   */
  schema?: string;
  /** Pause between two tries while waiting, ms; a random jitter of up to half is added. @default 50 */
  pollIntervalMs?: number;
  /**
   * Pause between two checks of a held lock, ms. A session the server ends is noticed at once anyway; the
   * heartbeat finds the silent cases (a network drop, a pooler that moved the connection) within
   * `heartbeatMs + queryTimeoutMs`, and keeps the session from looking idle to `idle_session_timeout`. Each
   * check is a query on the locker's one session, shared by the checks of every hold that fall due while
   * the session is busy. @default 2000
   */
  heartbeatMs?: number;
  /**
   * Longest a lock query may take, ms, counted from when it is made (it may wait behind the session's
   * other queries). A query that runs out fails the session: every hold on it is lost, and a waiter's try
   * fails the wait with RECGATE_STORAGE_ERROR. @default 5000
   */
  queryTimeoutMs?: number;
}

/** A cache key: an id, with a variant's suffix (see `../variant.ts`). */
const ID = new RegExp(`^${KEY_PATTERN}$`);

export function advisoryKey(id: string): string {
  return createHash('sha256').update(`recgate:recording:${id}`).digest().readBigInt64BE(0).toString();
}

/** The lock's own SQL, for one fencing table. */
interface Statements {
  /** Whether the fencing table exists (`to_regclass` is null when not). */
  fenceExists: string;
  /**
   * Creates the fencing table under a transaction-level advisory lock, in one statement (so its implicit
   * transaction does not take in the session's other queries), so that lockers starting together do not
   * race on CREATE TABLE (which can fail with a unique violation when they do).
   */
  createFence: string;
  /** Bumps and returns the key's generation; run right after taking the advisory lock. */
  nextGeneration: string;
  /**
   * For each key of the array $1: whether this backend holds its advisory lock, and its stored generation.
   * One query answers the checks of every hold that asked while the session was busy.
   */
  check: string;
}

function statements(schema: string | undefined): Statements {
  // The schema name was checked against SCHEMA_NAME, so it needs no quoting.
  const table = schema === undefined ? 'recgate_lock_fence' : `${schema}.recgate_lock_fence`;
  return {
    fenceExists: `SELECT to_regclass('${table}') IS NOT NULL AS ok`,
    // The key is a decimal integer of ours, so it needs no quoting either.
    createFence: `DO $recgate$ BEGIN
      PERFORM pg_advisory_xact_lock(${createHash('sha256')
        .update(`recgate:lock-fence:create:${schema ?? ''}`)
        .digest()
        .readBigInt64BE(0)
        .toString()});
      CREATE TABLE IF NOT EXISTS ${table} (key bigint PRIMARY KEY, generation bigint NOT NULL);
    END $recgate$`,
    nextGeneration: `
      INSERT INTO ${table} AS f (key, generation) VALUES ($1::bigint, 1)
      ON CONFLICT (key) DO UPDATE SET generation = f.generation + 1
      RETURNING generation::text AS generation`,
    // An advisory lock on a bigint key shows in pg_locks as classid = high 32 bits, objid = low 32 bits,
    // objsubid = 1.
    // pg_locks is read once (a join, not a subquery per key), so a batch costs one scan of the lock table.
    check: `
      SELECT k.key::text AS key, m.objid IS NOT NULL AS held, f.generation::text AS generation
      FROM unnest($1::bigint[]) AS k (key)
      LEFT JOIN (
        SELECT DISTINCT classid, objid FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() AND objsubid = 1
      ) AS m ON m.classid = ((k.key >> 32) & 4294967295)::oid AND m.objid = (k.key & 4294967295)::oid
      LEFT JOIN ${table} AS f ON f.key = k.key`,
  };
}

/** One key's answer to the `check` statement. */
interface CheckRow {
  held: boolean;
  generation: string | null;
}

/** What the handles of one locker share: the session, the keys this process holds, the settings. */
class Shared {
  readonly sql: Statements;
  readonly pollIntervalMs: number;
  readonly heartbeatMs: number;
  /**
   * The handle of this process that holds each key or is taking it. A session's advisory locks are
   * reentrant, so this, not the server, keeps two handles of one process apart.
   */
  readonly owners = new Map<string, PostgresLock>();
  readonly #config: pg.ClientConfig;
  /** The session being opened or open; replaced once it fails. */
  #opening: Promise<Session> | undefined;
  /** The open session, once `#opening` resolved. */
  #live: Session | undefined;
  /** Whether the fencing table is known to exist. */
  #fenced = false;
  #closed = false;

  constructor(config: pg.ClientConfig, sql: Statements, pollIntervalMs: number, heartbeatMs: number) {
    this.#config = config;
    this.sql = sql;
    this.pollIntervalMs = pollIntervalMs;
    this.heartbeatMs = heartbeatMs;
  }

  /**
   * The locker's session: opened on first use, and again after the last one failed, with the fencing
   * table created on the first. Rejects with RECGATE_STORAGE_ERROR when the database is unreachable.
   */
  session(): Promise<Session> {
    if (this.#closed) {
      return Promise.reject(createError('RECGATE_STORAGE_ERROR', { message: 'The lock backend is closed' }));
    }
    if (this.#opening === undefined || this.#live?.failed.aborted) {
      this.#live = undefined;
      const opening = this.#open();
      this.#opening = opening;
      opening.catch(() => {
        if (this.#opening === opening) this.#opening = undefined;
      });
    }
    return this.#opening;
  }

  /**
   * Keeps the process alive while this process holds or takes a lock, and lets it exit when the session
   * only sits idle (as a pool's idle connections do).
   */
  refresh(): void {
    const session = this.#live;
    if (session === undefined || session.failed.aborted) return;
    const client = session.client as pg.Client & { ref(): void; unref(): void };
    if (this.owners.size > 0) client.ref();
    else client.unref();
  }

  /** Ends the session; the server releases the locks still held, and their holds are lost. */
  async close(): Promise<void> {
    this.#closed = true;
    const session = await this.#opening?.catch(() => undefined);
    await session?.fail(new Error('The lock backend was closed'));
  }

  async #open(): Promise<Session> {
    const session = await Session.open(this.#config);
    if (!this.#fenced) {
      try {
        const exists = await session.query<{ ok: boolean }>(this.sql.fenceExists);
        if (exists.rows[0]?.ok !== true) await session.query(this.sql.createFence);
        this.#fenced = true;
      } catch (err) {
        void session.fail(asError(err));
        throw createError('RECGATE_STORAGE_ERROR', {
          message: 'The lock database could not create its fencing table',
          cause: err,
        });
      }
    }
    if (this.#closed) {
      await session.fail(new Error('The lock backend was closed'));
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock backend is closed' });
    }
    this.#live = session;
    this.refresh();
    return session;
  }
}

export class PostgresLocker implements Locker {
  readonly #shared: Shared;

  constructor(options: PostgresLockerOptions) {
    if (typeof options?.connectionString !== 'string' || !isPostgresUrl(options.connectionString)) {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    const { schema } = options;
    if (schema !== undefined && (typeof schema !== 'string' || !SCHEMA_NAME.test(schema))) {
      throw new TypeError('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
    }
    const poll = options.pollIntervalMs ?? 50;
    if (!Number.isInteger(poll) || poll < 1)
      throw new TypeError('options.pollIntervalMs must be a positive integer');
    const heartbeat = options.heartbeatMs ?? 2000;
    if (!Number.isInteger(heartbeat) || heartbeat < 1 || heartbeat > 600_000) {
      throw new TypeError('options.heartbeatMs must be an integer between 1 and 600000');
    }
    const queryTimeout = options.queryTimeoutMs ?? 5000;
    if (!Number.isInteger(queryTimeout) || queryTimeout < 1 || queryTimeout > 600_000) {
      throw new TypeError('options.queryTimeoutMs must be an integer between 1 and 600000');
    }
    const config: pg.ClientConfig = {
      connectionString: options.connectionString,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: queryTimeout,
      application_name: 'recgate-lock',
    };
    this.#shared = new Shared(config, statements(schema), poll, heartbeat);
  }

  /**
   * Gets ready before the first lock: opens the session and creates the fencing table unless it exists.
   * Optional (the first lock does the same) but moves that cost (tens of ms, hundreds when many processes
   * start at once) out of the first stampede after a start. Rejects with RECGATE_STORAGE_ERROR when the
   * database is unreachable.
   */
  async warm(): Promise<void> {
    await this.#shared.session();
  }

  newLock(id: string): Lock {
    if (!ID.test(id)) throw new TypeError(`lock id must match ^${KEY_PATTERN}$`);
    return new PostgresLock(this.#shared, advisoryKey(id));
  }

  /** Ends the session; locks still held are released by the server, and their holds are lost. */
  async close(): Promise<void> {
    await this.#shared.close();
  }
}

class PostgresLock implements Lock {
  readonly #shared: Shared;
  readonly #key: string;
  /** The current or last hold, until unlock. */
  #hold: Hold | undefined;
  /** The session of the current hold, until it is unlocked or lost. */
  #session: Session | undefined;
  /** Stops the current hold from hearing of its session's failure. */
  #unwatch: (() => void) | undefined;

  constructor(shared: Shared, key: string) {
    this.#shared = shared;
    this.#key = key;
  }

  get lost(): AbortSignal {
    return this.#hold?.lost ?? NEVER_LOST;
  }

  get token(): string | undefined {
    return this.#hold?.token;
  }

  verify(): Promise<void> {
    return this.#hold?.verify() ?? Promise.reject(notHeld());
  }

  async tryLock(): Promise<boolean> {
    if (this.#hold?.held) return true;
    return (await this.#try()).taken;
  }

  async lock(signal: AbortSignal): Promise<void> {
    if (this.#hold?.held) return;
    const timeout = () => createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });
    if (signal.aborted) throw timeout();
    for (;;) {
      const { taken, session } = await this.#try();
      if (taken) return;
      if (signal.aborted) throw timeout();
      const poll = this.#shared.pollIntervalMs;
      await pause(poll + randomInt(Math.floor(poll / 2) + 1), signal, session);
      if (signal.aborted) throw timeout();
      if (session?.failed.aborted) {
        throw createError('RECGATE_STORAGE_ERROR', {
          message: 'The lock database connection was lost',
          cause: session.failed.reason,
        });
      }
    }
  }

  async unlock(): Promise<void> {
    const hold = this.#hold;
    const session = this.#session;
    this.#hold = undefined;
    this.#session = undefined;
    this.#unwatch?.();
    this.#unwatch = undefined;
    // Once ended, the hold cannot be lost any more; one that was lost has let go of the key already.
    await hold?.end();
    if (!session) return;
    try {
      if (!session.failed.aborted) {
        await session.query('SELECT pg_advisory_unlock($1::bigint)', [this.#key]);
      }
    } catch (err) {
      // Failing the session releases the lock just as well.
      void session.fail(asError(err));
    } finally {
      this.#release();
    }
  }

  /**
   * One try on the locker's session, unless another handle of this process has the key. On success, fences
   * the new hold and starts it. Also says which session it polled on, if any.
   */
  async #try(): Promise<{ taken: boolean; session: Session | undefined }> {
    const { owners, sql } = this.#shared;
    if (owners.has(this.#key)) return { taken: false, session: undefined };
    owners.set(this.#key, this);
    this.#shared.refresh();
    let taken = false;
    try {
      const session = await this.#shared.session();
      let generation: string | undefined;
      try {
        const { rows } = await session.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_lock($1::bigint) AS ok',
          [this.#key],
        );
        if (rows[0]?.ok === true) {
          const fenced = await session.query<{ generation: string }>(sql.nextGeneration, [this.#key]);
          generation = fenced.rows[0]?.generation;
          if (generation === undefined) throw new Error('The lock database returned no generation');
        }
      } catch (err) {
        // A failed query may have left the session in any state (and holding the lock): drop it.
        void session.fail(asError(err));
        throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database failed', cause: err });
      }
      if (generation === undefined) return { taken: false, session };
      taken = true;
      this.#begin(session, generation);
      return { taken: true, session };
    } finally {
      if (!taken) this.#release();
    }
  }

  /** Frees the key for the other handles of this process, unless a later hold of another handle has it. */
  #release(): void {
    if (this.#shared.owners.get(this.#key) === this) this.#shared.owners.delete(this.#key);
    this.#shared.refresh();
  }

  #begin(session: Session, generation: string): void {
    const hold: Hold = new Hold({
      token: generation,
      heartbeatMs: this.#shared.heartbeatMs,
      check: () => this.#check(session, generation),
      drop: () => this.#drop(hold, session),
    });
    this.#hold = hold;
    this.#session = session;
    this.#unwatch = session.watch((reason) => hold.lose(reason));
    if (session.failed.aborted) hold.lose(session.failed.reason);
  }

  /** Lets go of what a lost hold still has: the advisory lock, if the session lives, and the key. */
  #drop(hold: Hold, session: Session): void {
    if (this.#hold === hold) {
      this.#unwatch?.();
      this.#unwatch = undefined;
      this.#session = undefined;
    }
    if (!session.failed.aborted) {
      // A check found a later generation while the session may still hold the advisory lock. The unlock is
      // queued on the session before the key is freed, so a try of this process runs after it.
      session
        .query('SELECT pg_advisory_unlock($1::bigint)', [this.#key])
        .catch((err: unknown) => session.fail(asError(err)));
    }
    this.#release();
  }

  async #check(session: Session, generation: string): Promise<void> {
    if (session.failed.aborted) throw session.failed.reason;
    let row: CheckRow | undefined;
    try {
      row = await session.check(this.#shared.sql.check, this.#key);
    } catch (err) {
      // The session cannot vouch for any hold any more (a silent server, a broken connection).
      void session.fail(asError(err));
      throw err;
    }
    if (!row.held) throw new Error('this database session no longer holds the advisory lock');
    if (row.generation !== generation) {
      throw new Error(`a later hold took the lock (generation ${row.generation}, ours ${generation})`);
    }
  }
}

/** Waits `ms`, or less when `signal` aborts or `session` fails. */
function pause(ms: number, signal: AbortSignal, session: Session | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      unwatch?.();
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const unwatch = session?.watch(done);
    signal.addEventListener('abort', done, { once: true });
    if (signal.aborted || session?.failed.aborted) done();
  });
}

/**
 * The locker's connection, shared by all its holds and tries. pg emits 'error' on a client whose server
 * session dies (terminated, failover, network drop), which would crash the process without a listener; a
 * session listens for as long as the client lives and turns the first failure, or any failed query the
 * locker reports, into `failed` and a call to every watcher, then ends the connection.
 */
class Session {
  readonly client: pg.Client;
  readonly #failed = new AbortController();
  readonly #watchers = new Set<(reason: unknown) => void>();
  #ended: Promise<void> | undefined;
  /** Settles when the last query made has. */
  #tail: Promise<unknown> = Promise.resolve();
  /** The checks waiting for the next batch, by key. */
  #checks = new Map<string, Array<{ resolve: (row: CheckRow) => void; reject: (err: unknown) => void }>>();
  /** Whether a batch query is queued that has not started yet (it takes every check asked for till then). */
  #checkQueued = false;

  private constructor(client: pg.Client) {
    this.client = client;
    client.on('error', (err: Error) => void this.fail(err));
    client.on('end', () => void this.fail(new Error('The lock database connection ended')));
  }

  /** Connects; rejects with RECGATE_STORAGE_ERROR when the database is unreachable. */
  static async open(config: pg.ClientConfig): Promise<Session> {
    const session = new Session(new pg.Client(config));
    try {
      await session.client.connect();
      return session;
    } catch (err) {
      void session.fail(asError(err));
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database is unreachable', cause: err });
    }
  }

  /**
   * Runs a query after those made before it have settled: pg deprecates a second query on a client still
   * busy with one. `queryTimeoutMs` counts from when the query is sent.
   */
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    const run = this.#tail.then(() => this.client.query<R>(text, values));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Checks `key` with `sql` (the `check` statement): the checks asked for before the next query starts go
   * into that one query, so the heartbeats of many holds do not queue up one query each. Resolves to the
   * key's row (not held, no generation, when the answer has none); rejects when the query fails.
   */
  check(sql: string, key: string): Promise<CheckRow> {
    return new Promise<CheckRow>((resolve, reject) => {
      const waiting = this.#checks.get(key);
      if (waiting) waiting.push({ resolve, reject });
      else this.#checks.set(key, [{ resolve, reject }]);
      if (this.#checkQueued) return;
      this.#checkQueued = true;
      const run = this.#tail.then(async () => {
        this.#checkQueued = false;
        const batch = this.#checks;
        this.#checks = new Map();
        try {
          const { rows } = await this.client.query<CheckRow & { key: string }>(sql, [[...batch.keys()]]);
          const byKey = new Map(rows.map((row) => [row.key, row]));
          for (const [k, waiters] of batch) {
            const row = byKey.get(k) ?? { held: false, generation: null };
            for (const waiter of waiters) waiter.resolve(row);
          }
        } catch (err) {
          for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(err);
        }
      });
      this.#tail = run;
    });
  }

  /** Aborts, with the error as its reason, when the connection fails or ends, or a query failed. */
  get failed(): AbortSignal {
    return this.#failed.signal;
  }

  /** Calls `fn` once if the session fails from now on; returns what stops that. */
  watch(fn: (reason: unknown) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  /**
   * Marks the session failed with `err` (only the first call counts), tells every watcher, and ends the
   * connection, which ends the server session and so releases its advisory locks. Resolves once ended.
   */
  fail(err: Error): Promise<void> {
    if (!this.#failed.signal.aborted) {
      this.#failed.abort(err);
      const watchers = [...this.#watchers];
      this.#watchers.clear();
      for (const watcher of watchers) watcher(err);
      this.#ended = this.client.end().catch(() => undefined);
    }
    return this.#ended ?? Promise.resolve();
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
