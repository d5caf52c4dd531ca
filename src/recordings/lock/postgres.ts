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
  #held: pg.PoolClient | undefined;

  constructor(pool: pg.Pool, key: string, pollIntervalMs: number) {
    this.#pool = pool;
    this.#key = key;
    this.#pollIntervalMs = pollIntervalMs;
  }

  async tryLock(): Promise<boolean> {
    if (this.#held) return true;
    const client = await this.#connect();
    try {
      if (await this.#try(client)) return true;
      client.release();
      return false;
    } catch (err) {
      client.release(asError(err));
      throw err;
    }
  }

  async lock(signal: AbortSignal, _onReleaseRequested?: () => void): Promise<void> {
    if (this.#held) return;
    const timeout = () => createError('RECGATE_LOCK_TIMEOUT', { cause: signal.reason });
    if (signal.aborted) throw timeout();
    const client = await this.#connect();
    try {
      for (;;) {
        if (await this.#try(client)) return;
        if (signal.aborted) throw timeout();
        const pause = this.#pollIntervalMs + randomInt(Math.floor(this.#pollIntervalMs / 2) + 1);
        await sleep(pause, undefined, { signal }).catch(() => undefined);
        if (signal.aborted) throw timeout();
      }
    } catch (err) {
      // A failed query may have left the session in any state: drop it rather than pool it.
      if (this.#held !== client) client.release(isTimeout(err) ? undefined : asError(err));
      throw err;
    }
  }

  async unlock(): Promise<void> {
    const client = this.#held;
    if (!client) return;
    this.#held = undefined;
    try {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [this.#key]);
      client.release();
    } catch (err) {
      // Dropping the session releases the lock just as well.
      client.release(asError(err));
    }
  }

  async #connect(): Promise<pg.PoolClient> {
    try {
      return await this.#pool.connect();
    } catch (err) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database is unreachable', cause: err });
    }
  }

  async #try(client: pg.PoolClient): Promise<boolean> {
    let ok: boolean;
    try {
      const result = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [
        this.#key,
      ]);
      ok = result.rows[0]?.ok === true;
    } catch (err) {
      throw createError('RECGATE_STORAGE_ERROR', { message: 'The lock database failed', cause: err });
    }
    if (ok) this.#held = client;
    return ok;
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function isTimeout(err: unknown): boolean {
  return (err as { code?: string } | undefined)?.code === 'RECGATE_LOCK_TIMEOUT';
}
