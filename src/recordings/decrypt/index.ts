/**
 * Encrypted recordings (Twilio Voice Recording Encryption), wired for one process: the businesses' keys
 * from `--recording-keys-dir` (none without it) and the decrypting media view over each account's Twilio
 * client. The gateway (`server.ts`) and the admin commands (`cli/admin.ts`) build theirs here, so both open
 * the same recordings the same way.
 */
import type { Logger } from 'pino';
import type { TwilioClient } from '../../upstream/twilio-client.js';
import type { Upstream } from '../../upstream/upstream.js';
import { NO_RECORDING_KEYS, type RecordingKeys } from './keys.js';
import { DirectoryRecordingKeys } from './keys-dir.js';
import { type PlainMedia, RecordingDecryption } from './media.js';

export type { RecordingKeys } from './keys.js';
export { NO_RECORDING_KEYS } from './keys.js';
export { DirectoryRecordingKeys } from './keys-dir.js';
export { type PlainMedia, RecordingDecryption } from './media.js';

export interface Decryption {
  /** The media a business's downloads (and, for `account`, its HEADs) use: plaintext of encrypted recordings. */
  mediaFor(businessId: string, account?: string): PlainMedia;
  /** Reads the keys directory again (SIGHUP); throws naming a bad file, keeping the keys before. No-op without one. */
  reloadKeys(): void;
}

/** The keys in `keysDir`, or none without it. Throws an Error naming the directory or a bad file. */
export function openRecordingKeys(
  keysDir: string | undefined,
  logger: Logger,
): DirectoryRecordingKeys | undefined {
  return keysDir === undefined ? undefined : DirectoryRecordingKeys.open({ dir: keysDir, logger });
}

/**
 * Decrypts over `media` (requests name their account) with `keys`, learning which recordings are encrypted
 * from their resource on the account's client (`clientFor`; a client without `getRecording` decrypts
 * nothing).
 */
export function openDecryption(
  media: Pick<Upstream, 'fetchMedia'>,
  clientFor: (account: string | undefined) => Promise<Pick<Upstream, 'headMedia'>>,
  keys: (RecordingKeys & { reload?(): void }) | undefined,
): Decryption {
  const decryption = new RecordingDecryption({
    upstream: media,
    headFor: clientFor,
    lookup: async (sid, account) => {
      const client = (await clientFor(account)) as Partial<Pick<TwilioClient, 'getRecording'>>;
      return client.getRecording === undefined ? undefined : client.getRecording(sid);
    },
    keys: keys ?? NO_RECORDING_KEYS,
  });
  return {
    mediaFor: (businessId, account) => decryption.forBusiness(businessId, account),
    reloadKeys: () => keys?.reload?.(),
  };
}
