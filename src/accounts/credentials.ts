/**
 * A business's own Twilio credentials: what is sealed into `business_accounts.credentials`, as JSON, bound
 * to the business (the sealing context), so that sealed credentials copied into another business's row do
 * not open there.
 */
import { createError } from '../errors.js';
import type { Sealer } from '../secrets/sealed.js';

/** An auth token, or an API key with its secret (then optionally the auth token too, for webhooks). */
export type OwnCredentials =
  | { authToken: string; apiKey?: undefined; apiSecret?: undefined }
  | { apiKey: string; apiSecret: string; authToken?: string | undefined };

/** The sealing context of a business's credentials. */
export function credentialsContext(businessId: string): string {
  return `recgate:twilio-credentials:${businessId}`;
}

/**
 * Checks credentials from the admin API or the CLI; throws RECGATE_INVALID_REQUEST naming the bad field
 * (never echoing a secret).
 */
export function checkCredentials(input: {
  authToken?: unknown;
  apiKey?: unknown;
  apiSecret?: unknown;
}): OwnCredentials {
  const { authToken, apiKey, apiSecret } = input;
  const text = (value: unknown, field: string, pattern?: RegExp): string => {
    if (typeof value !== 'string' || value === '' || value.length > 256 || /[\s:]/.test(value)) {
      throw invalid(`${field} must be a non-empty string without spaces or ":" (at most 256 characters)`);
    }
    if (pattern !== undefined && !pattern.test(value)) throw invalid(`${field} must match ${pattern.source}`);
    return value;
  };
  if (apiKey === undefined && apiSecret === undefined) {
    if (authToken === undefined) throw invalid('auth_token, or api_key with api_secret, is required');
    return { authToken: text(authToken, 'auth_token') };
  }
  return {
    apiKey: text(apiKey, 'api_key', /^SK[0-9a-zA-Z]{32}$/),
    apiSecret: text(apiSecret, 'api_secret'),
    ...(authToken === undefined ? {} : { authToken: text(authToken, 'auth_token') }),
  };
}

export function sealCredentials(sealer: Sealer, businessId: string, credentials: OwnCredentials): string {
  return sealer.seal(JSON.stringify(credentials), credentialsContext(businessId));
}

/** Throws RECGATE_CREDENTIALS_UNREADABLE when the value does not open (or is not credentials once open). */
export function openCredentials(
  sealer: Sealer | undefined,
  businessId: string,
  sealed: string,
): OwnCredentials {
  if (sealer === undefined) {
    throw createError('RECGATE_CREDENTIALS_UNREADABLE', {
      cause: new Error('RECGATE_CREDENTIALS_KEY is not set, so stored credentials cannot be opened'),
    });
  }
  const json = sealer.open(sealed, credentialsContext(businessId));
  try {
    const parsed = JSON.parse(json) as Record<string, unknown>;
    return checkCredentials(parsed);
  } catch (err) {
    throw createError('RECGATE_CREDENTIALS_UNREADABLE', { cause: err });
  }
}

function invalid(message: string) {
  return createError('RECGATE_INVALID_REQUEST', { message });
}
