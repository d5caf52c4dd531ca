/**
 * {@link AccountStore} in the call log's PostgreSQL schema (table `business_accounts`, migration 7), through
 * a small `pg` pool of its own with `search_path` set to that schema. Each method is one statement.
 */
import pg from 'pg';
import { databaseError } from '../call-log/common.js';
import { type AccountDbRow, checkInput, requireAccountSid, requireBusinessId, toRow } from './common.js';
import type { AccountInput, AccountRow, AccountStore } from './store.js';

export interface PostgresAccountStoreOptions {
  /** A `postgres://` URL: the call log's. */
  connectionString: string;
  /** The call log's schema. @default the server's default search_path */
  schema?: string;
  /** Most connections. @default 2 */
  poolSize?: number;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

const SQL = {
  get: 'SELECT * FROM business_accounts WHERE business_id = $1',
  byAccount: 'SELECT * FROM business_accounts WHERE account_sid = $1 ORDER BY business_id',
  put: `
    INSERT INTO business_accounts (business_id, kind, account_sid, credentials, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (business_id) DO UPDATE SET
      kind = EXCLUDED.kind, account_sid = EXCLUDED.account_sid, credentials = EXCLUDED.credentials,
      updated_at = EXCLUDED.updated_at
    RETURNING *`,
  delete: 'DELETE FROM business_accounts WHERE business_id = $1',
  list: 'SELECT * FROM business_accounts ORDER BY business_id',
  reseal: `
    UPDATE business_accounts SET credentials = $3, updated_at = now()
    WHERE business_id = $1 AND kind = 'own' AND credentials = $2`,
} as const;

export class PostgresAccountStore implements AccountStore {
  readonly #pool: pg.Pool;

  /** Throws TypeError naming a bad option; connects lazily. */
  constructor(options: PostgresAccountStoreOptions) {
    const { connectionString, schema, poolSize = 2 } = options;
    if (typeof connectionString !== 'string' || connectionString === '') {
      throw new TypeError('options.connectionString must be a postgres:// URL');
    }
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
      throw new TypeError('options.schema must match ^[a-z_][a-z0-9_]{0,62}$');
    }
    if (!Number.isSafeInteger(poolSize) || poolSize < 1) {
      throw new TypeError('options.poolSize must be a positive integer');
    }
    this.#pool = new pg.Pool({
      connectionString,
      max: poolSize,
      connectionTimeoutMillis: 10_000,
      ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
    });
    // An idle connection's error (a server restart) is replaced on next use; unhandled, it would crash.
    this.#pool.on('error', () => undefined);
  }

  async get(businessId: string): Promise<AccountRow | undefined> {
    const [row] = await this.#query(SQL.get, [requireBusinessId(businessId)]);
    return row && toRow(row);
  }

  async byAccountSid(accountSid: string): Promise<AccountRow[]> {
    return (await this.#query(SQL.byAccount, [requireAccountSid(accountSid)])).map(toRow);
  }

  async put(input: AccountInput): Promise<AccountRow> {
    const row = checkInput(input);
    const [stored] = await this.#query(SQL.put, [
      row.businessId,
      row.kind,
      row.accountSid,
      row.sealedCredentials,
    ]);
    return toRow(stored!);
  }

  async delete(businessId: string): Promise<boolean> {
    return (await this.#exec(SQL.delete, [requireBusinessId(businessId)])).rowCount! > 0;
  }

  async list(): Promise<AccountRow[]> {
    return (await this.#query(SQL.list, [])).map(toRow);
  }

  async reseal(businessId: string, expected: string, sealed: string): Promise<boolean> {
    return (await this.#exec(SQL.reseal, [requireBusinessId(businessId), expected, sealed])).rowCount! > 0;
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #query(sql: string, params: unknown[]): Promise<AccountDbRow[]> {
    return (await this.#exec(sql, params)).rows;
  }

  async #exec(sql: string, params: unknown[]): Promise<pg.QueryResult<AccountDbRow>> {
    try {
      return await this.#pool.query<AccountDbRow>(sql, params);
    } catch (err) {
      throw databaseError(err);
    }
  }
}
