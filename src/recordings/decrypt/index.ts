/**
 * Encrypted recordings (Twilio Voice Recording Encryption), wired for one process: the businesses' keys
 * from `--recording-keys-dir` (none without it) and the decrypting media view over each account's Twilio
 * client. The gateway (`server.ts`) and the admin commands (`cli/admin.ts`) build theirs here, so both open
 * the same recordings the same way.
 */
import type { Logger } from 'pino';
import type { TwilioClient } from '../../upstream/twilio-client.js';
import type { Upstream } from '../../upstream/upstream.js';
import type { RecordingKeys } from './keys.js';
import { DirectoryRecordingKeys } from './keys-dir.js';
import { type PlainMedia, RecordingDecryption } from './media.js';

export type { RecordingKeys } from './keys.js';
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
 * nothing). Without `keys` (no `--recording-keys-dir`) the media passes through and no resource is read:
 * a deployment that decrypts nothing pays no extra Twilio request per download, and the ciphertext of an
 * encrypted recording fails the download's media check (RECGATE_UPSTREAM_BAD_MEDIA), so it is never stored.
 */
export function openDecryption(
  media: Pick<Upstream, 'fetchMedia'>,
  clientFor: (account: string | undefined) => Promise<Pick<Upstream, 'headMedia'>>,
  keys: (RecordingKeys & { reload?(): void }) | undefined,
): Decryption {
  if (keys === undefined) {
    return {
      mediaFor: (_businessId, account) => ({
        fetchMedia: (sid, request) => media.fetchMedia(sid, request),
        headMedia: async (sid, signal, variant) => (await clientFor(account)).headMedia(sid, signal, variant),
      }),
      reloadKeys: () => undefined,
    };
  }
  const decryption = new RecordingDecryption({
    upstream: media,
    headFor: clientFor,
    lookup: async (sid, account) => {
      const client = (await clientFor(account)) as Partial<Pick<TwilioClient, 'getRecording'>>;
      return client.getRecording === undefined ? undefined : client.getRecording(sid);
    },
    keys,
  });
  return {
    mediaFor: (businessId, account) => decryption.forBusiness(businessId, account),
    reloadKeys: () => keys?.reload?.(),
  };
}
