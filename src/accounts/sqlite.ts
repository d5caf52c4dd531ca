/**
 * {@link AccountStore} in the call log's SQLite file (table `business_accounts`, migration 6), through its
 * own better-sqlite3 connection; the call log must have migrated the file. Statements run inline and return
 * settled promises, as the call log's do.
 */
import type Database from 'better-sqlite3';
import { databaseError } from '../call-log/common.js';
import { openSqliteFile } from '../call-log/sqlite-file.js';
import { type AccountDbRow, checkInput, requireAccountSid, requireBusinessId, toRow } from './common.js';
import type { AccountInput, AccountRow, AccountStore } from './store.js';

export interface SqliteAccountStoreOptions {
  /** How long a write waits for another process's write lock, ms. @default 5000 */
  busyTimeoutMs?: number;
}

const SQL = {
  get: 'SELECT * FROM business_accounts WHERE business_id = ?',
  byAccount: 'SELECT * FROM business_accounts WHERE account_sid = ? ORDER BY business_id',
  put: `
    INSERT INTO business_accounts (business_id, kind, account_sid, credentials, updated_at)
    VALUES (@businessId, @kind, @accountSid, @sealedCredentials, @updatedAt)
    ON CONFLICT (business_id) DO UPDATE SET
      kind = excluded.kind, account_sid = excluded.account_sid, credentials = excluded.credentials,
      updated_at = excluded.updated_at`,
  delete: 'DELETE FROM business_accounts WHERE business_id = ?',
  list: 'SELECT * FROM business_accounts ORDER BY business_id',
  reseal: `
    UPDATE business_accounts SET credentials = ?, updated_at = ?
    WHERE business_id = ? AND kind = 'own' AND credentials = ?`,
} as const;

export class SqliteAccountStore implements AccountStore {
  readonly #db: Database.Database;

  /** Opens the call log's database file at `path`. Throws RECGATE_DATABASE_ERROR if it cannot. */
  constructor(path: string, options: SqliteAccountStoreOptions = {}) {
    this.#db = openSqliteFile(path, options.busyTimeoutMs);
  }

  get(businessId: string): Promise<AccountRow | undefined> {
    return this.#run(() => {
      const row = this.#db.prepare(SQL.get).get(requireBusinessId(businessId)) as AccountDbRow | undefined;
      return row && toRow(row);
    });
  }

  byAccountSid(accountSid: string): Promise<AccountRow[]> {
    return this.#run(() =>
      (this.#db.prepare(SQL.byAccount).all(requireAccountSid(accountSid)) as AccountDbRow[]).map(toRow),
    );
  }

  put(input: AccountInput): Promise<AccountRow> {
    return this.#run(() => {
      const row = { ...checkInput(input), updatedAt: new Date().toISOString() };
      this.#db.prepare(SQL.put).run(row);
      return row;
    });
  }

  delete(businessId: string): Promise<boolean> {
    return this.#run(() => this.#db.prepare(SQL.delete).run(requireBusinessId(businessId)).changes > 0);
  }

  list(): Promise<AccountRow[]> {
    return this.#run(() => (this.#db.prepare(SQL.list).all() as AccountDbRow[]).map(toRow));
  }

  reseal(businessId: string, expected: string, sealed: string): Promise<boolean> {
    return this.#run(
      () =>
        this.#db
          .prepare(SQL.reseal)
          .run(sealed, new Date().toISOString(), requireBusinessId(businessId), expected).changes > 0,
    );
  }

  async close(): Promise<void> {
    if (this.#db.open) this.#db.close();
  }

  #run<T>(fn: () => T): Promise<T> {
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(databaseError(err));
    }
  }
}
