/**
 * {@link RecordingKeys} from a directory: `{business_id}.pem` holds that business's RSA private key (PEM,
 * PKCS#8 `BEGIN PRIVATE KEY`; PKCS#1 `BEGIN RSA PRIVATE KEY` is read too), unencrypted.
 *
 * - **At start** ({@link DirectoryRecordingKeys.open}) every `*.pem` is read; a file that is not an RSA
 *   private key is an error naming the file, so a typo stops `recgate serve` instead of failing plays later.
 * - **On reload** (`recgate serve` calls {@link DirectoryRecordingKeys.reload} on SIGHUP) the directory is
 *   read again; when a file fails, the error names it and the keys loaded before stay in use.
 * - **On a miss** `get()` reads `{business_id}.pem` once more, so a key dropped into the directory works
 *   without a signal. A file that fails there is logged and counts as no key.
 *
 * Business ids that could not be a plain file name (a `/`, a leading dot, over 128 characters) have no key.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { RecordingKeys } from './keys.js';

const SAFE_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const PEM_SUFFIX = '.pem';

export interface DirectoryRecordingKeysOptions {
  /** The directory of `{business_id}.pem` files. */
  dir: string;
  /** Where a key that fails on a miss is reported. @default none (silently no key) */
  logger?: Logger | undefined;
}

export class DirectoryRecordingKeys implements RecordingKeys {
  readonly #dir: string;
  readonly #logger: Logger | undefined;
  #keys: Map<string, KeyObject>;

  private constructor(options: DirectoryRecordingKeysOptions, keys: Map<string, KeyObject>) {
    this.#dir = options.dir;
    this.#logger = options.logger;
    this.#keys = keys;
  }

  /** Reads every key in `options.dir`. Throws an Error naming the directory or the first bad file. */
  static open(options: DirectoryRecordingKeysOptions): DirectoryRecordingKeys {
    if (typeof options?.dir !== 'string' || options.dir === '') {
      throw new TypeError('options.dir must be a non-empty string');
    }
    return new DirectoryRecordingKeys(options, readAll(options.dir));
  }

  /** How many businesses have a key. */
  get size(): number {
    return this.#keys.size;
  }

  get(businessId: string): KeyObject | undefined {
    const known = this.#keys.get(businessId);
    if (known !== undefined || !SAFE_ID.test(businessId)) return known;
    const file = join(this.#dir, `${businessId}${PEM_SUFFIX}`);
    let pem: Buffer;
    try {
      pem = readFileSync(file);
    } catch {
      return undefined;
    }
    try {
      const key = parseKey(pem, file);
      this.#keys.set(businessId, key);
      return key;
    } catch (err) {
      this.#logger?.warn({ err, file }, 'A recording key file cannot be used');
      return undefined;
    }
  }

  /** Reads the directory again; on failure (naming the file) the keys loaded before stay. */
  reload(): void {
    this.#keys = readAll(this.#dir);
  }
}

function readAll(dir: string): Map<string, KeyObject> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw new Error(`recording keys directory ${dir} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const keys = new Map<string, KeyObject>();
  for (const name of names.sort()) {
    if (!name.endsWith(PEM_SUFFIX)) continue;
    const businessId = name.slice(0, -PEM_SUFFIX.length);
    const file = join(dir, name);
    if (!SAFE_ID.test(businessId)) {
      throw new Error(`recording key file ${file}: "${businessId}" cannot be a business id`);
    }
    let pem: Buffer;
    try {
      pem = readFileSync(file);
    } catch (err) {
      throw new Error(`recording key file ${file} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    keys.set(businessId, parseKey(pem, file));
  }
  return keys;
}

/** The RSA private key in `pem`; an Error naming `file` (never quoting the key) otherwise. */
function parseKey(pem: Buffer, file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new Error(`recording key file ${file} is not an unencrypted PEM private key`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new Error(`recording key file ${file} holds a ${key.asymmetricKeyType} key; RSA is required`);
  }
  return key;
}
