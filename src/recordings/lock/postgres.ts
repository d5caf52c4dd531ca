/**
 * {@link Locker} for several hosts: a PostgreSQL session-level advisory lock per recording.
 *
 * A held lock owns one pooled connection for as long as it is held; PostgreSQL releases an advisory lock
 * when the session ends, so a holder that crashes, or whose host drops off the network, loses the lock
 * without anyone guessing staleness (TCP keep-alive bounds how long a silent host keeps it). Waiting polls
 * `pg_try_advisory_lock` on one connection with jitter, so an aborted wait leaves nothing behind on the
 * server.
 *
 * Keys are the first 64 bits of SHA-256("recgate:recording:" + id), so they do not collide with the call
 * log's migration lock or with other applications' advisory locks in practice.
 */
import { createHash, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createError } from '../../errors.js';
import type { Lock, Locker } from './lock.js';

export interface PostgresLockerOptions {
  /** `postgres://` URL of the database the hosts share (usually the call log's). */
  connectionString: string;
  /** Connections at most, one per lock held or being waited for. @default 32 */
  maxConnections?: number;
  /** Pause between two tries while waiting, ms; a random jitter of up to half is added. @default 50 */
  pollIntervalMs?: number;
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

export function advisoryKey(id: string): string {
  return createHash('sha256').update(`recgate:recording:${id}`).digest().readBigInt64BE(0).toString();
}

export class PostgresLocker implements Locker {
  readonly #pool: pg.Pool;
  readonly #pollIntervalMs: number;

  constructor(options: PostgresLockerOptions) {
    if (
      typeof options?.connectionString !== 'string' ||
      !/^postgres(ql)?:\/\//.test(options.connectionString)
    ) {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    const max = options.maxConnections ?? 32;
    if (!Number.isInteger(max) || max < 1)
      throw new TypeError('options.maxConnections must be a positive integer');
    const poll = options.pollIntervalMs ?? 50;
    if (!Number.isInteger(poll) || poll < 1)
      throw new TypeError('options.pollIntervalMs must be a positive integer');
    this.#pollIntervalMs = poll;
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      max,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 10_000,
      application_name: 'recgate-lock',
    });
    // An idle connection that breaks is dropped by the pool; a held one reports through its lock.
    this.#pool.on('error', () => {});
  }

  newLock(id: string): Lock {
    if (!ID.test(id)) throw new TypeError('lock id must match ^[A-Za-z0-9_-]{1,128}$');
    return new PostgresLock(this.#pool, advisoryKey(id), this.#pollIntervalMs);
  }

  /** Closes the pool; locks still held are released by the server as their sessions end. */
  async close(): Promise<void> {
    await this.#pool.end();
  }
}

class PostgresLock implements Lock {
  readonly #pool: pg.Pool;
  readonly #key: string;
  readonly #pollIntervalMs: number;
  /** The session holding the lock, while held. */
  #held: Session | undefined;

  constructor(pool: pg.Pool, key: string, pollIntervalMs: number) {
    this.#pool = pool;
    this.#key = key;
    this.#pollIntervalMs = pollIntervalMs;
  }

  async tryLock(): Promise<boolean> {
    if (this.#held) return true;
    const session = await Session.open(this.#pool);
    try {
      if (await this.#try(session)) return true;
      session.release();
      return false;
    } catch (err) {
      session.release(asError(err));
      throw err;
    }
  }

  async lock(signal: AbortSignal): Promise<void> {
    if (this.#held) return;
    const timeout = () => createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });
    if (signal.aborted) throw timeout();
    const session = await Session.open(this.#pool);
    try {
      const wake = AbortSignal.any([signal, session.failed]);
      for (;;) {
        if (await this.#try(session)) return;
        if (signal.aborted) throw timeout();
        const pause = this.#pollIntervalMs + randomInt(Math.floor(this.#pollIntervalMs / 2) + 1);
        await sleep(pause, undefined, { signal: wake }).catch(() => undefined);
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
      if (this.#held !== session) session.release(isTimeout(err) ? undefined : asError(err));
      throw err;
    }
  }

  async unlock(): Promise<void> {
    const session = this.#held;
    if (!session) return;
    this.#held = undefined;
    try {
      await session.client.query('SELECT pg_advisory_unlock($1::bigint)', [this.#key]);
      session.release();
    } catch (err) {
      // Dropping the session releases the lock just as well.
      session.release(asError(err));
    }
  }

  async #try(session: Session): Promise<boolean> {
    let ok: boolean;
    try {
      const result = await session.client.query<{ ok: boolean }>(
        'SELECT pg_try_advisory_lock($1::bigint) AS ok',
        [this.#key],
      );
      ok = result.rows[0]?.ok === true;
    } catch (err) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database failed', cause: err });
    }
    if (ok) this.#held = session;
    return ok;
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

  /** Returns the connection to the pool, or drops it when `err` is given or the connection failed. */
  release(err?: Error): void {
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
