/** Argument checks and row mapping the account stores share. */
import { requireBusinessId } from '../call-log/common.js';
import { createError } from '../errors.js';
import { isAccountSid } from '../sid.js';
import type { AccountInput, AccountKind, AccountRow } from './store.js';

export interface AccountDbRow {
  business_id: string;
  kind: string;
  account_sid: string;
  credentials: string | null;
  updated_at: string | Date;
}

export { requireBusinessId };

/** Checks an {@link AccountInput}; throws RECGATE_INVALID_REQUEST naming the first bad field. */
export function checkInput(input: AccountInput): AccountInput {
  const businessId = requireBusinessId(input?.businessId);
  if (input.kind !== 'subaccount' && input.kind !== 'own') {
    throw invalid('kind must be "subaccount" or "own"');
  }
  requireAccountSid(input.accountSid);
  if (input.kind === 'own' ? typeof input.sealedCredentials !== 'string' : input.sealedCredentials !== null) {
    throw invalid('sealedCredentials must be a sealed string for "own" and null for "subaccount"');
  }
  return {
    businessId,
    kind: input.kind,
    accountSid: input.accountSid,
    sealedCredentials: input.sealedCredentials,
  };
}

export function requireAccountSid(value: unknown): string {
  if (!isAccountSid(value)) throw invalid('accountSid must match ^AC[0-9a-f]{32}$');
  return value;
}

export function toRow(row: AccountDbRow): AccountRow {
  return {
    businessId: row.business_id,
    kind: row.kind as AccountKind,
    accountSid: row.account_sid,
    sealedCredentials: row.credentials,
    updatedAt: row.updated_at instanceof Date ? row.updated_at.toISOString() : row.updated_at,
  };
}

function invalid(message: string) {
  return createError('RECGATE_INVALID_REQUEST', { message });
}
