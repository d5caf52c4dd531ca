/**
 * A small `pg` pool on the call log's PostgreSQL schema, for the stores that live beside the call log in
 * its schema (the cache index, the account mapping): `search_path` is set to the schema, so their SQL names
 * bare tables. Loaded only by PostgreSQL backends (pg costs a SQLite deployment memory).
 */
import pg from 'pg';

export interface SchemaPoolOptions {
  /** A `postgres://` URL: the call log's. */
  connectionString: string;
  /** The call log's schema. @default the server's default search_path */
  schema?: string | undefined;
  /** Most connections. @default 2 */
  poolSize?: number | undefined;
}

/**
 * Connections the pool keeps however long they sit idle. The stores on these pools are read on the request
 * path now and then (an account mapping every few seconds, the cache index as files are played), so the
 * request that finds the pool empty would wait for a connection's set-up: tens of ms, hundreds while
 * several processes start at once.
 */
const KEPT_CONNECTIONS = 1;

/** What a schema name may be: it is written into SQL unquoted. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Checks the options (a TypeError names the bad one) and opens the pool, which connects lazily (see
 * {@link warmSchemaPool}) and then keeps {@link KEPT_CONNECTIONS} open.
 */
export function schemaPool(options: SchemaPoolOptions): pg.Pool {
  const { connectionString, schema, poolSize = 2 } = options;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new TypeError('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
  }
  if (!Number.isSafeInteger(poolSize) || poolSize < 1) {
    throw new TypeError('options.poolSize must be a positive integer');
  }
  const pool = new pg.Pool({
    connectionString,
    max: poolSize,
    min: KEPT_CONNECTIONS,
    // Kept connections must not keep a process alive that has nothing else to do.
    allowExitOnIdle: true,
    connectionTimeoutMillis: 10_000,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  // An idle connection's error (a server restart) is replaced on next use; unhandled, it would crash.
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Checks out `count` connections at once through `connect` and releases them to their pool, which keeps them
 * idle up to its `min`: the first requests after a start then wait for no connection's set-up. Rejects with
 * the first failure, once every connection that did open is released.
 */
export async function warmPool(count: number, connect: () => Promise<{ release(): void }>): Promise<void> {
  const opened = await Promise.allSettled(Array.from({ length: Math.max(0, count) }, connect));
  for (const result of opened) if (result.status === 'fulfilled') result.value.release();
  const failed = opened.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

/** Opens the connections a {@link schemaPool} keeps, so that no request waits for their set-up. */
export function warmSchemaPool(pool: pg.Pool): Promise<void> {
  return warmPool(KEPT_CONNECTIONS, () => pool.connect());
}
