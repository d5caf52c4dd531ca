/**
 * Recordings kept encrypted on disk (`--store-encrypted`), on the way out: the cache hands {@link
 * AtRestDecryption.open} each recording it serves, and one whose bytes are ciphertext and GCM tag (its
 * identity record or pointer carries the wrapped key, see `StoredEncryption`) comes back as a plaintext view.
 * Everything the serving code sees is in plaintext terms: the size is the file's less the 16-byte tag (also
 * in the ETag), and the tag is never read out.
 *
 * - **The key at every request.** The business's private key must still be configured: without it (a key
 *   removed, then SIGHUP) even a finished file answers RECGATE_RECORDING_ENCRYPTED, so revoking the key
 *   revokes access. The unwrapped content key is kept in memory only (at most `maxKeys` recordings, the
 *   least recently used dropped first, all dropped on {@link AtRestDecryption.forget}, which SIGHUP calls),
 *   so a request costs no RSA operation; it is never written anywhere.
 * - **A whole read** (0 to the last byte) decrypts from byte 0 and checks the tag at the end: a file changed
 *   on disk errors the stream (RECGATE_RECORDING_TAMPERED) before its last plaintext block, so it is never
 *   served whole. Reads of a download still running get the same, as bytes arrive.
 * - **A small range of a finished file** may be served at once (`readNow`): the ciphertext the store has at
 *   hand, decrypted in place. The whole recording always streams.
 * - **A range** decrypts alone (AES-CTR at counter J0+1+⌊start/16⌋, see `gcm.ts`) and is not authenticated:
 *   a byte changed on disk inside it comes out changed, undetected. Checking would mean reading the whole
 *   file per range; the tag was checked over every byte before the file was committed, so only a change on
 *   disk afterwards goes unseen by ranges.
 */
import type { KeyObject } from 'node:crypto';
import { Readable } from 'node:stream';
import { createError } from '../../errors.js';
import { returnChunk } from '../../io/chunks.js';
import { assertRange, type CachedRecording, type CacheOutcome, type RecordingRef } from '../cache.js';
import type { StoredEncryption } from '../store/store.js';
import { recordingEtag } from '../variant.js';
import {
  CannotOpen,
  type ContentKey,
  decryptAt,
  GCM_IV_BYTES,
  openRange,
  openWhole,
  unwrapContentKey,
} from './gcm.js';
import { keyOf, type RecordingKeys } from './keys.js';
import { pipe, plainSize, tampered } from './media.js';

export interface AtRestDecryptionOptions {
  /** The businesses' private keys; none: every recording kept encrypted answers RECGATE_RECORDING_ENCRYPTED. */
  keys: RecordingKeys | undefined;
  /** Unwrapped content keys kept in memory. @default 1024 */
  maxKeys?: number | undefined;
}

interface Remembered {
  /** The private key that unwrapped it: a key replaced since does not reuse it. */
  privateKey: KeyObject;
  key: ContentKey;
}

export class AtRestDecryption {
  readonly #keys: RecordingKeys | undefined;
  readonly #maxKeys: number;
  /** By business and wrapped key, least recently used first. */
  readonly #remembered = new Map<string, Remembered>();

  constructor(options: AtRestDecryptionOptions) {
    const maxKeys = options.maxKeys ?? 1024;
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new TypeError('options.maxKeys must be a positive integer');
    }
    if (options.keys !== undefined && typeof options.keys.get !== 'function') {
      throw new TypeError('options.keys must implement get');
    }
    this.#keys = options.keys;
    this.#maxKeys = maxKeys;
  }

  /** How many unwrapped keys are kept now. */
  get size(): number {
    return this.#remembered.size;
  }

  /**
   * `recording` as business `businessId` may read it: itself when its bytes are the recording, else a
   * decrypting view. Throws RECGATE_RECORDING_ENCRYPTED when the business has no key that opens it.
   */
  open(recording: CachedRecording, ref: RecordingRef, businessId: string): CachedRecording {
    const stored = recording.encryption;
    if (stored === undefined) return recording;
    return new DecryptingRecording(recording, ref, this.#contentKey(businessId, stored));
  }

  /** Drops every unwrapped key (the keys were read again: one may be gone). */
  forget(): void {
    this.#remembered.clear();
  }

  #contentKey(businessId: string, stored: StoredEncryption): ContentKey {
    const privateKey = keyOf(this.#keys, businessId);
    const id = `${businessId}\n${stored.encryptedCek}`;
    const known = this.#remembered.get(id);
    if (known !== undefined && known.privateKey === privateKey) {
      this.#remembered.delete(id);
      this.#remembered.set(id, known);
      return known.key;
    }
    let key: ContentKey;
    try {
      const iv = Buffer.from(stored.iv, 'base64');
      if (iv.length !== GCM_IV_BYTES) throw new CannotOpen(`the stored IV is ${iv.length} bytes`);
      key = unwrapContentKey(
        { type: 'rsa-aes', publicKeySid: null, encryptedCek: Buffer.from(stored.encryptedCek, 'base64'), iv },
        privateKey,
      );
    } catch (err) {
      if (!(err instanceof CannotOpen)) throw err;
      throw createError('RECGATE_RECORDING_ENCRYPTED', { cause: err });
    }
    this.#remembered.delete(id);
    this.#remembered.set(id, { privateKey, key });
    if (this.#remembered.size > this.#maxKeys) {
      this.#remembered.delete(this.#remembered.keys().next().value as string);
    }
    return key;
  }
}

/** The plaintext view of a recording kept as ciphertext and tag. */
class DecryptingRecording implements CachedRecording {
  readonly size: number;
  readonly etag: string;
  readonly #cipher: CachedRecording;
  readonly #key: ContentKey;

  constructor(cipher: CachedRecording, ref: RecordingRef, key: ContentKey) {
    this.#cipher = cipher;
    this.#key = key;
    this.size = plainSize(cipher.size);
    this.etag = recordingEtag(ref, this.size);
  }

  get lastModified(): Date {
    return this.#cipher.lastModified;
  }

  get outcome(): CacheOutcome {
    return this.#cipher.outcome;
  }

  get complete(): boolean {
    return this.#cipher.complete;
  }

  createReadStream(start: number, end: number): Readable {
    assertRange(start, end, this.size);
    if (end < start) return Readable.from([]);
    if (start === 0 && end === this.size - 1) {
      // The tag too, so the whole is checked; the last plaintext block waits for it.
      const whole = openWhole(this.#key, tampered);
      return pipe(this.#cipher.createReadStream(0, this.#cipher.size - 1), whole);
    }
    const length = end - start + 1;
    return pipe(this.#cipher.createReadStream(start, end), openRange(this.#key, start, length));
  }

  /**
   * A small range at once, when the ciphertext is at hand: decrypted into the same buffer (of the chunk
   * pool, as the serving code expects). Never the whole recording: that streams, to check the tag.
   */
  readNow(start: number, end: number): Buffer | undefined {
    assertRange(start, end, this.size);
    if (start === 0 && end === this.size - 1) return undefined;
    const data = this.#cipher.readNow?.(start, end);
    if (data === undefined) return undefined;
    // The plaintext is a buffer of its own: the pooled ciphertext goes back at once.
    const plain = decryptAt(this.#key, start, data);
    returnChunk(data);
    return plain;
  }
}
