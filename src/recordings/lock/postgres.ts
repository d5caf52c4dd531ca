/**
 * {@link Locker} for several hosts: a PostgreSQL session-level advisory lock per recording.
 *
 * A held lock owns one pooled connection for as long as it is held; PostgreSQL releases an advisory lock
 * when the session ends, so a holder that crashes, or whose host drops off the network, loses the lock
 * without anyone guessing staleness. Waiting polls `pg_try_advisory_lock` on one connection with jitter, so
 * an aborted wait leaves nothing behind on the server.
 *
 * A session can also end under a live holder (failover, a network drop, `idle_session_timeout`, a pooler in
 * transaction mode handing the connection to another backend), and then another host takes the lock over
 * while the first still downloads. So every hold takes a fencing token: right after the advisory lock, the
 * same session increments the key's generation in `recgate_lock_fence (key bigint primary key, generation
 * bigint not null)`, a table the locker creates on first use. `verify()` and the heartbeat ask, in one
 * query, whether this backend (`pg_backend_pid()`) still holds the advisory lock and whether the stored
 * generation is still this hold's. `lost` also aborts at once when the connection reports an error or
 * ends; a check that takes longer than `queryTimeoutMs` counts as a loss too, so a silent server is noticed.
 * On a loss the session is dropped, never pooled again.
 *
 * Keys are the first 64 bits of SHA-256("recgate:recording:" + id), so they do not collide with the call
 * log's migration lock or with other applications' advisory locks in practice.
 */
import { createHash, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { SCHEMA_NAME, warmPool } from '../../call-log/schema-pool.js';
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
  /** Connections at most, one per lock held or being waited for. @default 32 */
  maxConnections?: number;
  /**
   * Connections {@link PostgresLocker.warm} opens and the pool keeps open however long they sit idle, so
   * that the first download or wait after a start does not pay for connection set-up (tens of ms, hundreds
   * when many processes start at once). @default 1
   */
  minConnections?: number;
  /** Pause between two tries while waiting, ms; a random jitter of up to half is added. @default 50 */
  pollIntervalMs?: number;
  /**
   * Pause between two checks of a held lock, ms. A session the server ends is noticed at once anyway; the
   * heartbeat finds the silent cases (a network drop, a pooler that moved the connection) within
   * `heartbeatMs + queryTimeoutMs`, and keeps the session from looking idle to `idle_session_timeout`. Each
   * check is one query per held lock. @default 2000
   */
  heartbeatMs?: number;
  /**
   * Longest a lock query may take, ms. A holder's check that runs out counts as losing the lock; a waiter's
   * try that runs out fails the wait with RECGATE_STORAGE_ERROR. @default 5000
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
  /** Creates the fencing table. */
  createFence: string;
  /** Serializes lockers creating the table, inside their transaction. */
  fenceCreationKey: string;
  /** Bumps and returns the key's generation; run right after taking the advisory lock. */
  nextGeneration: string;
  /** Whether this backend holds the advisory lock, and the key's stored generation. */
  check: string;
}

function statements(schema: string | undefined): Statements {
  // The schema name was checked against SCHEMA_NAME, so it needs no quoting.
  const table = schema === undefined ? 'recgate_lock_fence' : `${schema}.recgate_lock_fence`;
  return {
    fenceExists: `SELECT to_regclass('${table}') IS NOT NULL AS ok`,
    createFence: `CREATE TABLE IF NOT EXISTS ${table} (key bigint PRIMARY KEY, generation bigint NOT NULL)`,
    fenceCreationKey: createHash('sha256')
      .update(`recgate:lock-fence:create:${schema ?? ''}`)
      .digest()
      .readBigInt64BE(0)
      .toString(),
    nextGeneration: `
      INSERT INTO ${table} AS f (key, generation) VALUES ($1::bigint, 1)
      ON CONFLICT (key) DO UPDATE SET generation = f.generation + 1
      RETURNING generation::text AS generation`,
    // An advisory lock on a bigint key shows in pg_locks as classid = high 32 bits, objid = low 32 bits,
    // objsubid = 1.
    check: `
      SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
          AND classid = (($1::bigint >> 32) & 4294967295)::oid
          AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1
      ) AS held,
      (SELECT generation::text FROM ${table} WHERE key = $1::bigint) AS generation`,
  };
}

/** What the handles of one locker share. */
interface Shared {
  pool: pg.Pool;
  sql: Statements;
  pollIntervalMs: number;
  heartbeatMs: number;
  minConnections: number;
  /** Resolves once the fencing table exists. */
  fence(): Promise<void>;
}

export class PostgresLocker implements Locker {
  readonly #shared: Shared;
  #fence: Promise<void> | undefined;

  constructor(options: PostgresLockerOptions) {
    if (typeof options?.connectionString !== 'string' || !isPostgresUrl(options.connectionString)) {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    const { schema } = options;
    if (schema !== undefined && (typeof schema !== 'string' || !SCHEMA_NAME.test(schema))) {
      throw new TypeError('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
    }
    const max = options.maxConnections ?? 32;
    if (!Number.isInteger(max) || max < 1)
      throw new TypeError('options.maxConnections must be a positive integer');
    const min = options.minConnections ?? 1;
    if (!Number.isInteger(min) || min < 0 || min > max) {
      throw new TypeError('options.minConnections must be an integer from 0 to options.maxConnections');
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
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max,
      min,
      // Warm idle connections must not keep a process alive that has nothing else to do.
      allowExitOnIdle: true,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: queryTimeout,
      application_name: 'recgate-lock',
    });
    // An idle connection that breaks is dropped by the pool; a checked-out one reports through its Session.
    pool.on('error', () => {});
    this.#shared = {
      pool,
      sql: statements(schema),
      pollIntervalMs: poll,
      heartbeatMs: heartbeat,
      minConnections: min,
      fence: () => {
        this.#fence ??= createFence(pool, this.#shared.sql).catch((err: unknown) => {
          this.#fence = undefined;
          throw err;
        });
        return this.#fence;
      },
    };
  }

  /**
   * Gets ready before the first lock: creates the fencing table unless it exists and opens
   * `minConnections`. Optional (the first lock does the same) but moves that cost out of the first
   * stampede after a start. Rejects with RECGATE_STORAGE_ERROR when the database is unreachable.
   */
  async warm(): Promise<void> {
    await this.#shared.fence();
    const { pool } = this.#shared;
    await warmPool(this.#shared.minConnections - pool.totalCount, () => Session.open(pool));
  }

  newLock(id: string): Lock {
    if (!ID.test(id)) throw new TypeError(`lock id must match ^${KEY_PATTERN}$`);
    return new PostgresLock(this.#shared, advisoryKey(id));
  }

  /** Closes the pool; locks still held are released by the server as their sessions end. */
  async close(): Promise<void> {
    await this.#shared.pool.end();
  }
}

/**
 * Creates the fencing table unless it exists, under a transaction-level advisory lock so that lockers
 * starting together do not race on CREATE TABLE (which can fail with a unique violation when they do).
 */
async function createFence(pool: pg.Pool, sql: Statements): Promise<void> {
  const session = await Session.open(pool);
  try {
    const exists = await session.client.query<{ ok: boolean }>(sql.fenceExists);
    if (exists.rows[0]?.ok !== true) {
      await session.client.query('BEGIN');
      await session.client.query('SELECT pg_advisory_xact_lock($1::bigint)', [sql.fenceCreationKey]);
      await session.client.query(sql.createFence);
      await session.client.query('COMMIT');
    }
    session.release();
  } catch (err) {
    // Dropping the session also rolls back the transaction.
    session.release(asError(err));
    throw createError('RECGATE_STORAGE_ERROR', {
      message: 'The lock database could not create its fencing table',
      cause: err,
    });
  }
}

class PostgresLock implements Lock {
  readonly #shared: Shared;
  readonly #key: string;
  /** The current or last hold, until unlock. */
  #hold: Hold | undefined;
  /** The session of the current hold, until it is unlocked or lost. */
  #session: Session | undefined;

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
    await this.#shared.fence();
    const session = await Session.open(this.#shared.pool);
    try {
      if (await this.#take(session)) return true;
      session.release();
      return false;
    } catch (err) {
      session.release(asError(err));
      throw err;
    }
  }

  async lock(signal: AbortSignal): Promise<void> {
    if (this.#hold?.held) return;
    const timeout = () => createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });
    if (signal.aborted) throw timeout();
    await this.#shared.fence();
    const session = await Session.open(this.#shared.pool);
    try {
      const wake = AbortSignal.any([signal, session.failed]);
      for (;;) {
        if (await this.#take(session)) return;
        if (signal.aborted) throw timeout();
        const poll = this.#shared.pollIntervalMs;
        await sleep(poll + randomInt(Math.floor(poll / 2) + 1), undefined, { signal: wake }).catch(
          () => undefined,
        );
        if (signal.aborted) throw timeout();
        if (session.failed.aborted) {
          throw createError('RECGATE_STORAGE_ERROR', {
            message: 'The lock database connection was lost',
            cause: session.failed.reason,
          });
        }
      }
    } catch (err) {
      // A failed query may have left the session in any state: drop it rather than pool it.
      if (this.#session !== session) session.release(isTimeout(err) ? undefined : asError(err));
      throw err;
    }
  }

  async unlock(): Promise<void> {
    const hold = this.#hold;
    const session = this.#session;
    this.#hold = undefined;
    this.#session = undefined;
    await hold?.end();
    if (!session) return;
    try {
      await session.client.query('SELECT pg_advisory_unlock($1::bigint)', [this.#key]);
      session.release();
    } catch (err) {
      // Dropping the session releases the lock just as well.
      session.release(asError(err));
    }
  }

  /** One try; on success, fences the new hold and starts it. */
  async #take(session: Session): Promise<boolean> {
    let generation: string | undefined;
    try {
      const { rows } = await session.client.query<{ ok: boolean }>(
        'SELECT pg_try_advisory_lock($1::bigint) AS ok',
        [this.#key],
      );
      if (rows[0]?.ok !== true) return false;
      const fenced = await session.client.query<{ generation: string }>(this.#shared.sql.nextGeneration, [
        this.#key,
      ]);
      generation = fenced.rows[0]?.generation;
    } catch (err) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database failed', cause: err });
    }
    if (generation === undefined) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database returned no generation' });
    }
    this.#begin(session, generation);
    return true;
  }

  #begin(session: Session, generation: string): void {
    const hold = new Hold({
      token: generation,
      heartbeatMs: this.#shared.heartbeatMs,
      check: () => this.#check(session, generation),
      drop: () => {
        if (this.#session === session) this.#session = undefined;
        session.release(new Error('the lock was lost'));
      },
    });
    this.#hold = hold;
    this.#session = session;
    if (session.failed.aborted) hold.lose(session.failed.reason);
    else session.failed.addEventListener('abort', () => hold.lose(session.failed.reason), { once: true });
  }

  async #check(session: Session, generation: string): Promise<void> {
    const { rows } = await session.client.query<{ held: boolean; generation: string | null }>(
      this.#shared.sql.check,
      [this.#key],
    );
    const row = rows[0];
    if (row?.held !== true) throw new Error('this database session no longer holds the advisory lock');
    if (row.generation !== generation) {
      throw new Error(`a later hold took the lock (generation ${row.generation}, ours ${generation})`);
    }
  }
}

/**
 * A pooled connection checked out by one handle. pg-pool listens for errors only on idle connections, so a
 * checked-out one whose server session dies (terminated, failover, network drop) would emit an unhandled
 * 'error' event and crash the process; a session listens from checkout to release and turns the failure
 * into `failed`, which aborts with the first error.
 */
class Session {
  readonly client: pg.PoolClient;
  readonly #failed = new AbortController();
  #released = false;

  private constructor(client: pg.PoolClient) {
    this.client = client;
    client.on('error', this.#onError);
    client.on('end', this.#onEnd);
  }

  /** Checks out a connection; rejects with RECGATE_STORAGE_ERROR when the database is unreachable. */
  static async open(pool: pg.Pool): Promise<Session> {
    try {
      return new Session(await pool.connect());
    } catch (err) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database is unreachable', cause: err });
    }
  }

  /** Aborts, with the error as its reason, when the connection fails or ends while checked out. */
  get failed(): AbortSignal {
    return this.#failed.signal;
  }

  /**
   * Returns the connection to the pool, or drops it (ending the server session) when `err` is given or the
   * connection failed. Only the first call does anything.
   */
  release(err?: Error): void {
    if (this.#released) return;
    this.#released = true;
    this.client.off('error', this.#onError);
    this.client.off('end', this.#onEnd);
    this.client.release(
      err ?? (this.#failed.signal.aborted ? asError(this.#failed.signal.reason) : undefined),
    );
  }

  readonly #onError = (err: Error): void => {
    if (!this.#failed.signal.aborted) this.#failed.abort(err);
  };

  readonly #onEnd = (): void => {
    this.#onError(new Error('The lock database connection ended'));
  };
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function isTimeout(err: unknown): boolean {
  return (err as { code?: string } | undefined)?.code === 'RECGATE_LOCK_TIMEOUT';
}
