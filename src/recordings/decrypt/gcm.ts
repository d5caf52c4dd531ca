/**
 * Twilio Voice Recording Encryption, the cipher side: each recording is AES-256-GCM under its own content
 * encryption key (CEK), wrapped with the customer's RSA public key (RSAES-OAEP, SHA-256, MGF1-SHA-256). The
 * media body is the ciphertext followed by the 16-byte GCM tag, so a plaintext is 16 bytes shorter.
 *
 * Two ways to open a body, both streaming:
 * - {@link openWhole}: the whole body from byte 0. Decrypts as bytes arrive and checks the tag at the end;
 *   the last plaintext block is held back until the tag verifies, so a body that fails its tag never
 *   yields its last plaintext byte (a download that stops there is never "complete").
 * - {@link openRange}: a range starting at any byte. GCM's keystream is CTR mode: ciphertext byte X is
 *   keyed by counter block `inc32^(1 + floor(X/16))(J0)` (J0 = IV || 0x00000001 for a 12-byte IV), so a range
 *   decrypts on its own. A range cannot be authenticated: only the whole body carries the tag's proof.
 * - {@link verifyWhole}: the whole body checked but passed on as ciphertext, for keeping it encrypted on disk.
 */
import {
  createDecipheriv,
  constants as cryptoConstants,
  type DecipherGCM,
  type KeyObject,
  privateDecrypt,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Bytes of the GCM tag after the ciphertext. */
export const GCM_TAG_BYTES = 16;
/** IV length recgate opens: Twilio's, and the only one whose counter blocks follow without GHASH. */
export const GCM_IV_BYTES = 12;
const BLOCK = 16;
/** What {@link openWhole} holds back: the tag candidate and the plaintext block before it. */
const HOLD_BYTES = GCM_TAG_BYTES + BLOCK;

/** A recording's unwrapped key and IV: what both openers need. */
export interface ContentKey {
  /** The 32-byte AES-256 key. */
  cek: Buffer;
  /** The 12-byte GCM IV. */
  iv: Buffer;
}

/** What Twilio's `encryption_details` carries, checked. */
export interface EncryptionDetails {
  /** `rsa-aes`, the one scheme Twilio uses. */
  type: string;
  /** The public key (`CR…`) the CEK was wrapped with. */
  publicKeySid: string | null;
  /** The wrapped CEK. */
  encryptedCek: Buffer;
  iv: Buffer;
}

/** Why details or a key cannot open a recording; the message is for logs, never for clients. */
export class CannotOpen extends Error {}

/**
 * Reads Twilio's `encryption_details` (`{"type":"rsa-aes","public_key_sid":"CR…","encrypted_cek":"<base64>",
 * "iv":"<base64>"}`). Throws {@link CannotOpen} naming the bad field.
 */
export function parseEncryptionDetails(raw: unknown): EncryptionDetails {
  if (typeof raw !== 'object' || raw === null) throw new CannotOpen('encryption_details is not an object');
  const o = raw as Record<string, unknown>;
  if (o.type !== 'rsa-aes')
    throw new CannotOpen(`encryption_details.type ${JSON.stringify(o.type)} is not rsa-aes`);
  const encryptedCek = base64Field(o, 'encrypted_cek');
  const iv = base64Field(o, 'iv');
  if (iv.length !== GCM_IV_BYTES) {
    throw new CannotOpen(
      `encryption_details.iv is ${iv.length} bytes; only ${GCM_IV_BYTES}-byte IVs are supported`,
    );
  }
  const sid = o.public_key_sid;
  return { type: o.type, publicKeySid: typeof sid === 'string' ? sid : null, encryptedCek, iv };
}

/** Unwraps the CEK with the business's RSA private key; throws {@link CannotOpen} when the key does not fit. */
export function unwrapContentKey(details: EncryptionDetails, privateKey: KeyObject): ContentKey {
  let cek: Buffer;
  try {
    cek = privateDecrypt(
      { key: privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      details.encryptedCek,
    );
  } catch (err) {
    throw new CannotOpen('the configured private key does not unwrap the recording key', { cause: err });
  }
  if (cek.length !== 32) throw new CannotOpen(`the unwrapped recording key is ${cek.length} bytes, not 32`);
  return { cek, iv: details.iv };
}

/** The AES counter block that keys ciphertext byte `offset`: `IV || (2 + floor(offset/16))`, big-endian. */
export function counterBlock(iv: Buffer, offset: number): Buffer {
  if (iv.length !== GCM_IV_BYTES) throw new RangeError(`iv must be ${GCM_IV_BYTES} bytes`);
  const counter = 2 + Math.floor(offset / BLOCK);
  // GCM increments only the low 32 bits; a counter past them would be a body over 64 GiB, beyond GCM's limit.
  if (!Number.isSafeInteger(offset) || offset < 0 || counter > 0xffffffff) {
    throw new RangeError(`offset ${offset} is outside what one GCM message can hold`);
  }
  const block = Buffer.alloc(BLOCK);
  iv.copy(block, 0);
  block.writeUInt32BE(counter, GCM_IV_BYTES);
  return block;
}

/**
 * Decrypts a whole body (ciphertext then tag) as it streams. The stream errors with `onBadTag()`'s error
 * when the tag does not verify, or the body is shorter than a tag; it never emits the last block before.
 */
export function openWhole(key: ContentKey, onBadTag: (why: string, cause?: unknown) => Error): Transform {
  const decipher = createDecipheriv('aes-256-gcm', key.cek, key.iv);
  return holdBack(
    HOLD_BYTES,
    (bytes) => decipher.update(bytes),
    (held) => {
      const tag = tagOf(held, onBadTag);
      const last = decipher.update(held.subarray(0, held.length - GCM_TAG_BYTES));
      checkTag(decipher, tag, onBadTag);
      return last;
    },
  );
}

/**
 * Checks a whole body (ciphertext then tag) as it streams and passes it on unchanged: what is kept on disk
 * with `--store-encrypted`. The last 16 bytes (the tag) are held back until it verifies, so a body that
 * fails never yields its last byte (a download that stops there is never "complete"); the stream then
 * errors with `onBadTag()`'s error, as {@link openWhole}'s does.
 */
export function verifyWhole(key: ContentKey, onBadTag: (why: string, cause?: unknown) => Error): Transform {
  const decipher = createDecipheriv('aes-256-gcm', key.cek, key.iv);
  return holdBack(
    GCM_TAG_BYTES,
    (bytes) => {
      // The plaintext is not needed, only the tag's running state.
      decipher.update(bytes);
      return bytes;
    },
    (held) => {
      checkTag(decipher, tagOf(held, onBadTag), onBadTag);
      return held;
    },
  );
}

/**
 * A stream that holds its last `hold` bytes back until the body ends: what each chunk releases goes through
 * `release` in one piece (one push per chunk), and at the end `finish` gets the held bytes and answers what
 * to emit last, or throws (the stream then errors).
 */
function holdBack(
  hold: number,
  release: (bytes: Buffer) => Buffer,
  finish: (held: Buffer) => Buffer,
): Transform {
  let tail = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      const total = tail.length + chunk.length;
      if (total <= hold) {
        tail = Buffer.concat([tail, chunk]);
        callback();
        return;
      }
      const cut = total - hold;
      let out: Buffer;
      if (cut <= tail.length) {
        out = tail.subarray(0, cut);
        tail = Buffer.concat([tail.subarray(cut), chunk]);
      } else {
        const fromChunk = cut - tail.length;
        out =
          tail.length === 0
            ? chunk.subarray(0, fromChunk)
            : Buffer.concat([tail, chunk.subarray(0, fromChunk)]);
        // A copy: keeping a view would pin the whole chunk.
        tail = Buffer.from(chunk.subarray(fromChunk));
      }
      callback(null, release(out));
    },
    flush(callback: TransformCallback) {
      let last: Buffer;
      try {
        last = finish(tail);
      } catch (err) {
        callback(err as Error);
        return;
      }
      callback(null, last);
    },
  });
}

/** The tag at the end of `held`, or `onBadTag()`'s error when the body is shorter than one. */
function tagOf(held: Buffer, onBadTag: (why: string, cause?: unknown) => Error): Buffer {
  if (held.length < GCM_TAG_BYTES) throw onBadTag(`the body is ${held.length} bytes, shorter than a GCM tag`);
  return held.subarray(held.length - GCM_TAG_BYTES);
}

function checkTag(
  decipher: DecipherGCM,
  tag: Buffer,
  onBadTag: (why: string, cause?: unknown) => Error,
): void {
  try {
    decipher.setAuthTag(tag);
    decipher.final();
  } catch (err) {
    throw onBadTag('the GCM tag does not verify', err);
  }
}

/**
 * Decrypts a body that starts at ciphertext byte `start`, passing on at most `limit` bytes (the rest, the
 * tag or beyond, is dropped). Unauthenticated: see the module comment.
 */
export function openRange(key: ContentKey, start: number, limit: number): Transform {
  const decipher = ctrAt(key, start);
  let left = limit;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      if (left <= 0) {
        callback();
        return;
      }
      const take = chunk.length <= left ? chunk : chunk.subarray(0, left);
      left -= take.length;
      callback(null, decipher.update(take));
    },
  });
}

/** Decrypts `data`, the ciphertext from byte `start` on, at once. Unauthenticated, as {@link openRange}. */
export function decryptAt(key: ContentKey, start: number, data: Buffer): Buffer {
  return ctrAt(key, start).update(data);
}

/** AES-CTR positioned at ciphertext byte `start`. */
function ctrAt(key: ContentKey, start: number) {
  const decipher = createDecipheriv('aes-256-ctr', key.cek, counterBlock(key.iv, start));
  // The first block may begin before `start`: its leading keystream bytes are spent on nothing.
  const skip = start % BLOCK;
  if (skip > 0) decipher.update(Buffer.alloc(skip));
  return decipher;
}

function base64Field(o: Record<string, unknown>, name: string): Buffer {
  const value = o[name];
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(value.trim())) {
    throw new CannotOpen(`encryption_details.${name} is not base64`);
  }
  return Buffer.from(value.trim(), 'base64');
}
