/**
 * {@link AccountStore} in the call log's PostgreSQL schema (table `business_accounts`, migration 6), through
 * a small `pg` pool of its own with `search_path` set to that schema. Each method is one statement.
 */
import type pg from 'pg';
import { databaseError } from '../call-log/common.js';
import { type SchemaPoolOptions, schemaPool, warmSchemaPool } from '../call-log/schema-pool.js';
import { type AccountDbRow, checkInput, requireAccountSid, requireBusinessId, toRow } from './common.js';
import type { AccountInput, AccountRow, AccountStore } from './store.js';

export type PostgresAccountStoreOptions = SchemaPoolOptions;

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

  /** Throws TypeError naming a bad option; connects lazily, or at {@link warm}. */
  constructor(options: PostgresAccountStoreOptions) {
    this.#pool = schemaPool(options);
  }

  /**
   * Opens the connection the pool keeps: a server's first request for a business reads its mapping, and
   * would otherwise wait for the connection's set-up, in every process at once after a start. Rejects with
   * RECGATE_DATABASE_ERROR.
   */
  async warm(): Promise<void> {
    try {
      await warmSchemaPool(this.#pool);
    } catch (err) {
      throw databaseError(err);
    }
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
