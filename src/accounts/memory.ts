/**
 * {@link AccountStore} in this process's memory: for an in-memory SQLite call log (`sqlite::memory:`), whose
 * database no other connection can open. Mappings last as long as the process.
 */
import { checkInput, requireAccountSid, requireBusinessId } from './common.js';
import type { AccountInput, AccountRow, AccountStore } from './store.js';

export class MemoryAccountStore implements AccountStore {
  readonly #rows = new Map<string, AccountRow>();

  async get(businessId: string): Promise<AccountRow | undefined> {
    const row = this.#rows.get(requireBusinessId(businessId));
    return row && { ...row };
  }

  async byAccountSid(accountSid: string): Promise<AccountRow[]> {
    requireAccountSid(accountSid);
    return (await this.list()).filter((r) => r.accountSid === accountSid);
  }

  async put(input: AccountInput): Promise<AccountRow> {
    const row = { ...checkInput(input), updatedAt: new Date().toISOString() };
    this.#rows.set(row.businessId, row);
    return { ...row };
  }

  async delete(businessId: string): Promise<boolean> {
    return this.#rows.delete(requireBusinessId(businessId));
  }

  async list(): Promise<AccountRow[]> {
    return [...this.#rows.values()]
      .sort((a, b) => (a.businessId < b.businessId ? -1 : a.businessId > b.businessId ? 1 : 0))
      .map((r) => ({ ...r }));
  }

  async reseal(businessId: string, expected: string, sealed: string): Promise<boolean> {
    const row = this.#rows.get(requireBusinessId(businessId));
    if (row === undefined || row.sealedCredentials !== expected) return false;
    row.sealedCredentials = sealed;
    row.updatedAt = new Date().toISOString();
    return true;
  }

  async close(): Promise<void> {}
}
