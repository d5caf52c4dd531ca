/**
 * Sealed values: small secrets (a business's Twilio credentials) encrypted at rest with AES-256-GCM.
 *
 * A sealed value is one ASCII string, `rs1.<kid>.<iv>.<ciphertext>.<tag>` (base64url parts), where `kid` is
 * the first 8 hex digits of SHA-256 over the key: it names the key that sealed the value without revealing
 * it, so a {@link Sealer} holding the current key and the previous ones opens values sealed under any of
 * them, and `recgate accounts rotate-key` finds the values still sealed under an old key. Every value is
 * bound to a context string (the additional authenticated data, e.g. the business it belongs to), so a value
 * copied into another row does not open there. A fresh random 96-bit IV per seal.
 *
 * Keys come from `RECGATE_CREDENTIALS_KEY` (32 bytes, as 64 hex digits or base64) and, while rotating,
 * `RECGATE_CREDENTIALS_KEY_PREVIOUS` (one or more such keys, comma-separated). Opening a tampered value, one
 * sealed under a key not held, or one sealed for another context throws RECGATE_CREDENTIALS_UNREADABLE,
 * whose message never carries key or plaintext material.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { createError } from '../errors.js';

const VERSION = 'rs1';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const PART = /^[A-Za-z0-9_-]*$/;

export interface SealerOptions {
  /** The key new values are sealed under (32 bytes). */
  key: Buffer;
  /** Keys that still open older values (32 bytes each); never used to seal. @default [] */
  previousKeys?: readonly Buffer[];
}

export class Sealer {
  /** The current key's id: what values sealed now carry. */
  readonly keyId: string;
  readonly #key: Buffer;
  readonly #keys = new Map<string, Buffer>();

  /** Throws TypeError naming the bad option (a key not 32 bytes long). */
  constructor(options: SealerOptions) {
    checkKey(options.key, 'options.key');
    this.#key = Buffer.from(options.key);
    this.keyId = keyIdOf(this.#key);
    this.#keys.set(this.keyId, this.#key);
    for (const [i, key] of (options.previousKeys ?? []).entries()) {
      checkKey(key, `options.previousKeys[${i}]`);
      const id = keyIdOf(key);
      if (!this.#keys.has(id)) this.#keys.set(id, Buffer.from(key));
    }
  }

  /**
   * The sealer `RECGATE_CREDENTIALS_KEY` (and `RECGATE_CREDENTIALS_KEY_PREVIOUS`) describe, or `undefined`
   * when no key is set. Throws TypeError naming the variable for a malformed key.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): Sealer | undefined {
    const current = env.RECGATE_CREDENTIALS_KEY?.trim();
    const previous = (env.RECGATE_CREDENTIALS_KEY_PREVIOUS ?? '')
      .split(',')
      .map((k) => k.trim())
      .filter((k) => k !== '');
    if (!current) {
      if (previous.length > 0) {
        throw new TypeError('RECGATE_CREDENTIALS_KEY_PREVIOUS is set but RECGATE_CREDENTIALS_KEY is not');
      }
      return undefined;
    }
    return new Sealer({
      key: parseKey(current, 'RECGATE_CREDENTIALS_KEY'),
      previousKeys: previous.map((k, i) => parseKey(k, `RECGATE_CREDENTIALS_KEY_PREVIOUS[${i}]`)),
    });
  }

  /** Encrypts `plaintext` under the current key, bound to `context`. */
  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, this.keyId, b64(iv), b64(body), b64(cipher.getAuthTag())].join('.');
  }

  /**
   * The plaintext of a value {@link seal} made for `context` under a key this sealer holds. Throws
   * RECGATE_CREDENTIALS_UNREADABLE if the value is malformed, tampered with, sealed for another context, or
   * sealed under a key not held.
   */
  open(sealed: string, context: string): string {
    const parts = parse(sealed);
    const key = this.#keys.get(parts.kid);
    if (key === undefined) {
      throw unreadable(`sealed under key ${parts.kid}, which is neither the current key nor a previous one`);
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, parts.iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(parts.tag);
      return Buffer.concat([decipher.update(parts.body), decipher.final()]).toString('utf8');
    } catch {
      throw unreadable('authentication failed: the value was altered or sealed for another context');
    }
  }

  /** Whether `sealed` is sealed under the current key (otherwise `rotate-key` re-seals it). */
  isCurrent(sealed: string): boolean {
    return sealedKeyId(sealed) === this.keyId;
  }
}

/** The id of the key a sealed value names; throws RECGATE_CREDENTIALS_UNREADABLE if it is malformed. */
export function sealedKeyId(sealed: string): string {
  return parse(sealed).kid;
}

/**
 * A 32-byte key written as 64 hex digits or as base64 (standard or URL-safe, padding optional). Throws
 * TypeError naming `name` otherwise; the message never repeats the value.
 */
export function parseKey(text: string, name: string): Buffer {
  const value = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}={0,1}$/.test(value)) {
    const key = Buffer.from(value.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (key.length === KEY_BYTES) return key;
  }
  throw new TypeError(
    `${name} must be 32 bytes written as 64 hex digits or as base64 (e.g. from \`openssl rand -base64 32\`)`,
  );
}

function keyIdOf(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

function checkKey(key: Buffer, name: string): void {
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) {
    throw new TypeError(`${name} must be a Buffer of ${KEY_BYTES} bytes`);
  }
}

function parse(sealed: string): { kid: string; iv: Buffer; body: Buffer; tag: Buffer } {
  const parts = typeof sealed === 'string' ? sealed.split('.') : [];
  if (parts.length !== 5 || parts[0] !== VERSION || !parts.every((p) => PART.test(p))) {
    throw unreadable('not a sealed value');
  }
  const [, kid, iv, body, tag] = parts as [string, string, string, string, string];
  const ivBytes = Buffer.from(iv, 'base64url');
  const tagBytes = Buffer.from(tag, 'base64url');
  if (!/^[0-9a-f]{8}$/.test(kid) || ivBytes.length !== IV_BYTES || tagBytes.length !== TAG_BYTES) {
    throw unreadable('not a sealed value');
  }
  return { kid, iv: ivBytes, body: Buffer.from(body, 'base64url'), tag: tagBytes };
}

function b64(bytes: Buffer): string {
  return bytes.toString('base64url');
}

function unreadable(why: string) {
  return createError('RECGATE_CREDENTIALS_UNREADABLE', { cause: new Error(why) });
}
