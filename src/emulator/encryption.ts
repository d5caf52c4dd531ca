/**
 * Voice Recording Encryption as Twilio does it, for the emulator: a fresh AES-256-GCM key (CEK) and 12-byte
 * IV per recording; the media is served as ciphertext followed by the 16-byte tag; the CEK is wrapped with
 * the account's registered RSA public key (RSAES-OAEP with SHA-256 and MGF1-SHA-256); the recording
 * resource carries `encryption_details`.
 */
import {
  createCipheriv,
  createHash,
  createPublicKey,
  constants as cryptoConstants,
  type KeyObject,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { z } from 'zod';
import { invalid, invalidInput } from './invalid.js';

/** Twilio's public key SIDs: `CR` and 32 hex digits. */
export const PUBLIC_KEY_SID_PATTERN = 'CR[0-9a-f]{32}';

export interface EncryptedMedia {
  /** Ciphertext, then the GCM tag. */
  data: Buffer;
  sha256: string;
  details: { type: 'rsa-aes'; public_key_sid: string; encrypted_cek: string; iv: string };
}

/** Body of `POST /__emulator/public-keys`. */
export const publicKeySchema = z.strictObject({
  /** The RSA public key, PEM (`BEGIN PUBLIC KEY`). */
  public_key: z.string().min(1).max(20_000),
  /** The SID to register it under. Default: derived from the key. */
  sid: z
    .string()
    .regex(new RegExp(`^${PUBLIC_KEY_SID_PATTERN}$`), `must match ^${PUBLIC_KEY_SID_PATTERN}$`)
    .optional(),
});

/** Checks a registration; the key and its SID, or RECGATE_INVALID_REQUEST naming the field. */
export function parsePublicKey(raw: unknown): { sid: string; key: KeyObject } {
  const parsed = publicKeySchema.safeParse(raw ?? {});
  if (!parsed.success) invalidInput(parsed.error.issues[0]!);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: parsed.data.public_key, format: 'pem' });
  } catch {
    invalid('public_key: not a PEM public key');
  }
  if (key.asymmetricKeyType !== 'rsa') {
    invalid('public_key: must be an RSA key');
  }
  const der = key.export({ type: 'spki', format: 'der' });
  const sid = parsed.data.sid ?? `CR${createHash('sha256').update(der).digest('hex').slice(0, 32)}`;
  return { sid, key };
}

/** `plaintext` encrypted for `publicKey`, registered as `publicKeySid`. */
export function encryptMedia(plaintext: Buffer, publicKeySid: string, publicKey: KeyObject): EncryptedMedia {
  const cek = randomBytes(32);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', cek, iv);
  const data = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  const encryptedCek = publicEncrypt(
    { key: publicKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
    cek,
  );
  return {
    data,
    sha256: createHash('sha256').update(data).digest('hex'),
    details: {
      type: 'rsa-aes',
      public_key_sid: publicKeySid,
      encrypted_cek: encryptedCek.toString('base64'),
      iv: iv.toString('base64'),
    },
  };
}
