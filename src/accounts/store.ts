/**
 * Which Twilio account serves each business: the mapping's storage. `memory.ts`, `sqlite.ts` and
 * `postgres.ts` implement it (the SQL ones on the call log's table `business_accounts`, migration 6), and
 * every backend passes one contract suite, test/accounts/contract.ts.
 *
 * A business without a row is served by the main account (`TWILIO_ACCOUNT_SID`). A row is either a
 * `subaccount` (the main credentials, the subaccount's SID in the REST path) or `own` (the business's own
 * credentials, stored only as a sealed value from `secrets/sealed.ts`: this interface never sees them in
 * clear). Methods throw RECGATE_DATABASE_ERROR when the database fails, and RECGATE_INVALID_REQUEST for a
 * malformed argument (naming the field).
 */

export type AccountKind = 'subaccount' | 'own';

export interface AccountRow {
  businessId: string;
  kind: AccountKind;
  /** The account whose SID goes in the REST path (`AC` + 32 hex digits). */
  accountSid: string;
  /** For `own`: the sealed credentials; `null` for `subaccount`. */
  sealedCredentials: string | null;
  /** ISO 8601 time of the last change. */
  updatedAt: string;
}

export type AccountInput = Omit<AccountRow, 'updatedAt'>;

export interface AccountStore {
  /** The business's row, or `undefined` when the main account serves it. */
  get(businessId: string): Promise<AccountRow | undefined>;

  /** Every row whose account SID is `accountSid`, ordered by business id (for webhooks). */
  byAccountSid(accountSid: string): Promise<AccountRow[]>;

  /** Creates or replaces the business's row; resolves to it as stored. */
  put(input: AccountInput): Promise<AccountRow>;

  /** Removes the business's row (it goes back to the main account); whether there was one. */
  delete(businessId: string): Promise<boolean>;

  /** Every row, ordered by business id. */
  list(): Promise<AccountRow[]>;

  /**
   * Replaces the sealed credentials of an `own` row only if they still equal `expected` (a compare-and-set,
   * so a key rotation never overwrites credentials an operator changed meanwhile); whether it replaced them.
   */
  reseal(businessId: string, expected: string, sealed: string): Promise<boolean>;

  close(): Promise<void>;
}
