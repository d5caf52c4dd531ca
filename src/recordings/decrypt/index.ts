/**
 * Encrypted recordings (Twilio Voice Recording Encryption), wired for one process: the businesses' keys
 * from `--recording-keys-dir` (none without it) and the decrypting media view over each account's Twilio
 * client. The gateway (`server.ts`) and the admin commands (`cli/admin.ts`) build theirs here, so both open
 * the same recordings the same way.
 */
import type { Logger } from 'pino';
import type { TwilioClient } from '../../upstream/twilio-client.js';
import type { Upstream } from '../../upstream/upstream.js';
import type { DecryptStored } from '../local-cache.js';
import { AtRestDecryption } from './at-rest.js';
import type { RecordingKeys } from './keys.js';
import { DirectoryRecordingKeys } from './keys-dir.js';
import { type PlainMedia, RecordingDecryption } from './media.js';

export { AtRestDecryption } from './at-rest.js';
export type { RecordingKeys } from './keys.js';
export { DirectoryRecordingKeys } from './keys-dir.js';
export { type PlainMedia, RecordingDecryption } from './media.js';

export interface Decryption {
  /** The media a business's downloads (and, for `account`, its HEADs) use: plaintext of encrypted recordings. */
  mediaFor(businessId: string, account?: string): PlainMedia;
  /**
   * Opens recordings kept encrypted on disk for the business reading them (the cache's `decryptStored`);
   * without keys, every such recording answers RECGATE_RECORDING_ENCRYPTED.
   */
  decryptStored: DecryptStored;
  /**
   * Reads the keys directory again (SIGHUP) and forgets every unwrapped content key; throws naming a bad
   * file, keeping the keys before. No-op without one.
   */
  reloadKeys(): void;
}

export interface DecryptionOptions {
  /**
   * `--store-encrypted`: downloads keep an encrypted recording's ciphertext and tag on disk (with its
   * wrapped key), and every read decrypts. @default false (the plaintext is stored)
   */
  storeEncrypted?: boolean | undefined;
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
  options: DecryptionOptions = {},
): Decryption {
  // Files a run with --store-encrypted kept stay readable with the keys, whatever this run stores.
  const atRest = new AtRestDecryption({ keys });
  const decryptStored: DecryptStored = (recording, ref, businessId) =>
    atRest.open(recording, ref, businessId);
  if (keys === undefined) {
    return {
      mediaFor: (_businessId, account) => ({
        fetchMedia: (sid, request) => media.fetchMedia(sid, request),
        headMedia: async (sid, signal, variant) => (await clientFor(account)).headMedia(sid, signal, variant),
      }),
      decryptStored,
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
    storeEncrypted: options.storeEncrypted,
  });
  return {
    mediaFor: (businessId, account) => decryption.forBusiness(businessId, account),
    decryptStored,
    reloadKeys: () => {
      try {
        keys.reload?.();
      } finally {
        // Even when the new keys fail to load: forgetting costs one RSA operation per recording, no more.
        atRest.forget();
      }
    },
  };
}
