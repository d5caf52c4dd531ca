/**
 * Encrypted recordings (Twilio Voice Recording Encryption), wired for one process: the businesses' keys
 * from `--recording-keys-dir` (none without it) and the decrypting media view over the Twilio client. The
 * gateway (`server.ts`) and the admin commands (`cli/admin.ts`) build theirs here, so both open the same
 * recordings the same way.
 */
import type { Logger } from 'pino';
import type { TwilioClient } from '../../upstream/twilio-client.js';
import type { Upstream } from '../../upstream/upstream.js';
import { NO_RECORDING_KEYS } from './keys.js';
import { DirectoryRecordingKeys } from './keys-dir.js';
import { type PlainMedia, RecordingDecryption } from './media.js';

export type { RecordingKeys } from './keys.js';
export { NO_RECORDING_KEYS } from './keys.js';
export { DirectoryRecordingKeys } from './keys-dir.js';
export { type PlainMedia, RecordingDecryption } from './media.js';

export interface Decryption {
  /** The media a business's downloads and HEADs use: plaintext of encrypted recordings. */
  mediaFor(businessId: string): PlainMedia;
  /** Reads the keys directory again (SIGHUP); throws naming a bad file, keeping the keys before. No-op without one. */
  reloadKeys(): void;
}

/**
 * Reads the keys in `keysDir` (throwing an Error that names a bad file) and decrypts over `upstream`,
 * learning which recordings are encrypted from their resource (`getRecording`).
 */
export function openDecryption(
  upstream: Pick<Upstream, 'fetchMedia' | 'headMedia'> & Pick<TwilioClient, 'getRecording'>,
  keysDir: string | undefined,
  logger: Logger,
): Decryption {
  const keys = keysDir === undefined ? undefined : DirectoryRecordingKeys.open({ dir: keysDir, logger });
  const decryption = new RecordingDecryption({
    upstream,
    lookup: (sid, signal) => upstream.getRecording(sid, signal),
    keys: keys ?? NO_RECORDING_KEYS,
  });
  return {
    mediaFor: (businessId) => decryption.forBusiness(businessId),
    reloadKeys: () => keys?.reload(),
  };
}
