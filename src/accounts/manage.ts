/**
 * Changing the business → account mapping, as the admin API (`/api/admin/businesses/{id}/twilio-account`)
 * and the CLI (`recgate accounts`) both do, and what either shows of it: never a secret, only whether
 * credentials are stored and the id of the key that sealed them.
 */
import { isBusinessId } from '../auth/jwt.js';
import { createError } from '../errors.js';
import { type Sealer, sealedKeyId } from '../secrets/sealed.js';
import { isAccountSid } from '../sid.js';
import { checkCredentials, credentialsContext, sealCredentials } from './credentials.js';
import type { AccountRow, AccountStore } from './store.js';

/** A requested mapping, as the admin API's body or the CLI's flags give it. */
export interface AccountChange {
  kind: unknown;
  accountSid?: unknown;
  authToken?: unknown;
  apiKey?: unknown;
  apiSecret?: unknown;
}

/** What the admin API answers and `recgate accounts show` prints. */
export interface AccountView {
  business_id: string;
  kind: 'main' | 'subaccount' | 'own';
  account_sid: string;
  /** For `own`: that credentials are stored, and the id of the key that sealed them. */
  credentials: { stored: true; key_id: string } | null;
  updated_at: string | null;
}

export function viewOf(businessId: string, row: AccountRow | undefined, mainAccountSid: string): AccountView {
  if (row === undefined) {
    return {
      business_id: businessId,
      kind: 'main',
      account_sid: mainAccountSid,
      credentials: null,
      updated_at: null,
    };
  }
  let keyId = 'unreadable';
  try {
    if (row.sealedCredentials !== null) keyId = sealedKeyId(row.sealedCredentials);
  } catch {
    // A malformed value is still shown as stored; using it fails with RECGATE_CREDENTIALS_UNREADABLE.
  }
  return {
    business_id: row.businessId,
    kind: row.kind,
    account_sid: row.accountSid,
    credentials: row.kind === 'own' ? { stored: true, key_id: keyId } : null,
    updated_at: row.updatedAt,
  };
}

/**
 * Applies `change` to `businessId`: `main` removes the row, `subaccount` stores the SID, `own` seals the
 * credentials first. Throws RECGATE_INVALID_REQUEST naming the bad field (never echoing a secret),
 * RECGATE_CREDENTIALS_KEY_MISSING for own credentials without a key, RECGATE_DATABASE_ERROR.
 */
export async function applyChange(
  store: AccountStore,
  sealer: Sealer | undefined,
  businessId: string,
  change: AccountChange,
  mainAccountSid: string,
): Promise<AccountView> {
  if (!isBusinessId(businessId)) invalid('business id must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$');
  const { kind } = change;
  if (kind === 'main') {
    for (const field of ['accountSid', 'authToken', 'apiKey', 'apiSecret'] as const) {
      if (change[field] !== undefined) invalid(`${snake(field)} does not go with kind "main"`);
    }
    await store.delete(businessId);
    return viewOf(businessId, undefined, mainAccountSid);
  }
  if (kind !== 'subaccount' && kind !== 'own') invalid('kind must be "main", "subaccount" or "own"');
  if (!isAccountSid(change.accountSid)) invalid('account_sid must match ^AC[0-9a-f]{32}$');
  if (change.accountSid === mainAccountSid) {
    invalid('account_sid is the main account: use kind "main"');
  }
  if (kind === 'subaccount') {
    for (const field of ['authToken', 'apiKey', 'apiSecret'] as const) {
      if (change[field] !== undefined) invalid(`${snake(field)} does not go with kind "subaccount"`);
    }
    const row = await store.put({ businessId, kind, accountSid: change.accountSid, sealedCredentials: null });
    return viewOf(businessId, row, mainAccountSid);
  }
  const credentials = checkCredentials(change);
  if (sealer === undefined) throw createError('RECGATE_CREDENTIALS_KEY_MISSING');
  const row = await store.put({
    businessId,
    kind,
    accountSid: change.accountSid,
    sealedCredentials: sealCredentials(sealer, businessId, credentials),
  });
  return viewOf(businessId, row, mainAccountSid);
}

export interface RotationReport {
  /** Rows re-sealed under the current key. */
  resealed: string[];
  /** Rows already under the current key. */
  current: string[];
  /** Rows that did not open (a key not held, or altered), or changed meanwhile: named, left as they were. */
  failed: Array<{ businessId: string; reason: string }>;
}

/**
 * Re-seals every business's own credentials under the sealer's current key (opening them with it or a
 * previous key), each with a compare-and-set so a concurrent change is never overwritten. Once it reports
 * no failure, `RECGATE_CREDENTIALS_KEY_PREVIOUS` can be dropped.
 */
export async function rotateKey(store: AccountStore, sealer: Sealer): Promise<RotationReport> {
  const report: RotationReport = { resealed: [], current: [], failed: [] };
  for (const row of await store.list()) {
    if (row.kind !== 'own' || row.sealedCredentials === null) continue;
    const context = credentialsContext(row.businessId);
    try {
      if (sealer.isCurrent(row.sealedCredentials)) {
        sealer.open(row.sealedCredentials, context);
        report.current.push(row.businessId);
        continue;
      }
      const sealed = sealer.seal(sealer.open(row.sealedCredentials, context), context);
      if (await store.reseal(row.businessId, row.sealedCredentials, sealed))
        report.resealed.push(row.businessId);
      else
        report.failed.push({
          businessId: row.businessId,
          reason: 'changed during the rotation; run it again',
        });
    } catch (err) {
      const reason =
        err instanceof Error && 'code' in err && err.code === 'RECGATE_CREDENTIALS_UNREADABLE'
          ? `does not open: ${(err.cause as Error | undefined)?.message ?? err.message}`
          : String((err as Error).message ?? err);
      report.failed.push({ businessId: row.businessId, reason });
    }
  }
  return report;
}

function snake(field: string): string {
  return field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function invalid(message: string): never {
  throw createError('RECGATE_INVALID_REQUEST', { message });
}
