/**
 * Where the private keys that open encrypted recordings come from. One key per business: the RSA private
 * key whose public half the business registered with Twilio for Voice Recording Encryption.
 * `keys-dir.ts` reads them from a directory; the code that decrypts names only {@link RecordingKeys}.
 */
import type { KeyObject } from 'node:crypto';
import { createError } from '../../errors.js';

export interface RecordingKeys {
  /**
   * The business's RSA private key, or `undefined` when none is configured (its encrypted recordings then
   * answer RECGATE_RECORDING_ENCRYPTED). Synchronous and cheap: called once per download of an encrypted
   * recording. Never throws.
   */
  get(businessId: string): KeyObject | undefined;
}

/** `businessId`'s key in `keys`; throws RECGATE_RECORDING_ENCRYPTED when it has none (or there are no keys). */
export function keyOf(keys: RecordingKeys | undefined, businessId: string): KeyObject {
  const key = keys?.get(businessId);
  if (key === undefined) {
    throw createError('RECGATE_RECORDING_ENCRYPTED', {
      message: 'The recording is encrypted and no private key is configured for this business',
      cause: new Error(`no recording key for business ${JSON.stringify(businessId)}`),
    });
  }
  return key;
}
