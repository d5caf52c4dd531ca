/**
 * Encrypted recordings on the way in: a view of the upstream's media that hands the recording cache (and a
 * HEAD) plaintext, for one business. `fetchMedia` and `headMedia` keep their contract (see
 * `upstream/upstream.ts`) in plaintext terms: sizes are 16 bytes (the GCM tag) shorter, and a byte range
 * names the same bytes in both, since GCM encrypts byte for byte.
 *
 * - **Which recordings.** The recording resource's `encryption_details` says; the view asks for it once
 *   per recording, together with the media (no added first-byte time). An unencrypted recording's media
 *   passes through untouched.
 * - **Which key.** The business's private key ({@link RecordingKeys}) unwraps the recording's key. No key, a
 *   key that does not unwrap it, or details recgate cannot read: RECGATE_RECORDING_ENCRYPTED, before any
 *   body byte is used, so nothing is stored.
 * - **The whole body** (a download) is decrypted as it streams and its GCM tag checked at the end; a tag
 *   that fails errors the body with {@link Unusable}(RECGATE_RECORDING_TAMPERED), so the download machine
 *   discards the generation and never commits it. Its last plaintext block is held back until the tag
 *   verifies: a download that stops before never has every byte, and is never found complete.
 * - **A range** (a seek-ahead slice) is decrypted on its own (CTR), unauthenticated: the download that
 *   commits the file still checks the tag over every byte. A resume from the middle (`start` without `end`)
 *   cannot check the tag, so it fetches the whole body instead and answers 200, as an upstream that ignored
 *   the Range would: the download restarts from byte 0 and verifies.
 * - **Kept encrypted** (`storeEncrypted`, `--store-encrypted`): `fetchMedia` hands the cache the ciphertext
 *   and tag instead, sizes as Twilio's, marked with `MediaResponse.encryption` (the wrapped key and IV) so
 *   the store keeps them beside the file; a whole body's tag is still checked, before its last 16 bytes
 *   flow. Reads decrypt at the cache boundary (`at-rest.ts`). HEADs answer plaintext sizes either way.
 */
import { pipeline, type Readable, type Transform } from 'node:stream';
import { createError } from '../../errors.js';
import { raceAbort } from '../../io/abort.js';
import type { RecordingSid } from '../../sid.js';
import type {
  MediaHead,
  MediaRequest,
  MediaResponse,
  Upstream,
  UpstreamRecording,
} from '../../upstream/upstream.js';
import { Unusable } from '../download/write.js';
import type { StoredEncryption } from '../store/store.js';
import { isCanonical, type Variant } from '../variant.js';
import {
  CannotOpen,
  type ContentKey,
  GCM_TAG_BYTES,
  openRange,
  openWhole,
  parseEncryptionDetails,
  unwrapContentKey,
  verifyWhole,
} from './gcm.js';
import { keyOf, type RecordingKeys } from './keys.js';

/**
 * The recording resource in the Twilio account `account` (`undefined`: the main one), or `undefined` when
 * the upstream does not know it (then nothing is decrypted).
 */
export type RecordingLookup = (
  sid: RecordingSid,
  account: string | undefined,
) => Promise<UpstreamRecording | undefined>;

export interface RecordingDecryptionOptions {
  /** Where media comes from: requests name their account (`MediaRequest.account`). */
  upstream: Pick<Upstream, 'fetchMedia'>;
  /** The HEADs of an account's media (`undefined`: the main account). */
  headFor: (account: string | undefined) => Promise<Pick<Upstream, 'headMedia'>>;
  /** Reads a recording's resource, for its `encryption_details` (Twilio: `GET /Recordings/{sid}.json`). */
  lookup: RecordingLookup;
  /** The businesses' private keys. */
  keys: RecordingKeys;
  /**
   * `--store-encrypted`: downloads get the ciphertext and tag as Twilio sent them (the tag still checked
   * before the last 16 bytes flow), with {@link MediaResponse.encryption} saying how to open them; the
   * cache keeps them so and decrypts every read (`at-rest.ts`). HEADs answer plaintext sizes either way.
   * @default false (downloads get the plaintext)
   */
  storeEncrypted?: boolean | undefined;
}

/** The media a business's downloads and HEADs see: plaintext, whether or not Twilio encrypted it. */
export type PlainMedia = Pick<Upstream, 'fetchMedia' | 'headMedia'>;

export class RecordingDecryption {
  readonly #o: RecordingDecryptionOptions;

  constructor(options: RecordingDecryptionOptions) {
    if (typeof options?.upstream?.fetchMedia !== 'function') {
      throw new TypeError('options.upstream must implement fetchMedia');
    }
    if (typeof options.headFor !== 'function') throw new TypeError('options.headFor must be a function');
    if (typeof options.lookup !== 'function') throw new TypeError('options.lookup must be a function');
    if (typeof options.keys?.get !== 'function') throw new TypeError('options.keys must implement get');
    this.#o = options;
  }

  /**
   * A view for one business. It remembers each recording's key for its own life, so make one per download
   * (one flight) or per request: a key added or replaced later is seen by the next view.
   */
  forBusiness(businessId: string, account?: string): PlainMedia {
    return new BusinessMedia(this.#o, businessId, account);
  }
}

class BusinessMedia implements PlainMedia {
  readonly #o: RecordingDecryptionOptions;
  readonly #businessId: string;
  /** The account a HEAD asks (a download's requests name their own). */
  readonly #account: string | undefined;
  readonly #keys = new Map<RecordingSid, Promise<Opened | undefined>>();

  constructor(options: RecordingDecryptionOptions, businessId: string, account: string | undefined) {
    this.#o = options;
    this.#businessId = businessId;
    this.#account = account;
  }

  async fetchMedia(sid: RecordingSid, request: MediaRequest = {}): Promise<MediaResponse> {
    const { upstream } = this.#o;
    const signal = request.signal;
    // Twilio encrypts the recording; its renditions (WAV, dual-channel) are served as they come.
    if (!isCanonical(request.variant)) return upstream.fetchMedia(sid, request);
    const account = request.account;
    if (request.start !== undefined && request.start > 0 && request.end === undefined) {
      const key = await this.#key(sid, account, signal);
      if (key === undefined) return upstream.fetchMedia(sid, request);
      // The same request but for the whole body: whatever else it names (its signal) carries over.
      const whole = { ...request, start: undefined, end: undefined, ifRange: undefined };
      return this.#open(await upstream.fetchMedia(sid, whole), key, true);
    }
    const pending = upstream.fetchMedia(sid, request);
    // Handled at once: it may fail while the key is still being looked up (then `await pending` rethrows).
    pending.catch(() => undefined);
    let key: Opened | undefined;
    try {
      key = await this.#key(sid, account, signal);
    } catch (err) {
      pending.then(
        (response) => response.body.destroy(),
        () => undefined,
      );
      throw err;
    }
    const response = await pending;
    if (key === undefined) return response;
    return this.#open(response, key, request.start === undefined && request.end === undefined);
  }

  /** The response as the cache gets it: plaintext, or with `storeEncrypted`, checked ciphertext. */
  #open(response: MediaResponse, key: Opened, whole: boolean): MediaResponse {
    return this.#o.storeEncrypted === true
      ? verifyOrDestroy(response, key, whole)
      : decryptOrDestroy(response, key.key, whole);
  }

  async headMedia(sid: RecordingSid, signal?: AbortSignal, variant?: Variant): Promise<MediaHead> {
    const client = await this.#o.headFor(this.#account);
    if (!isCanonical(variant)) return client.headMedia(sid, signal, variant);
    const [head, key] = await Promise.all([
      client.headMedia(sid, signal, variant),
      this.#key(sid, this.#account, signal),
    ]);
    if (key === undefined || head.size === null) return head;
    return { ...head, size: plainSize(head.size) };
  }

  /**
   * The recording's key, `undefined` when it is not encrypted. Asked once per recording, for every caller
   * (the download and its slices): the look-up runs on the upstream client's own timeouts, and `signal`
   * ends only this caller's wait, so a slice that is cancelled never fails the download. A failure is not
   * kept.
   */
  #key(
    sid: RecordingSid,
    account: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Opened | undefined> {
    let key = this.#keys.get(sid);
    if (key === undefined) {
      key = this.#unwrap(sid, account);
      this.#keys.set(sid, key);
      key.catch(() => this.#keys.delete(sid));
    }
    return raceAbort(key, signal);
  }

  async #unwrap(sid: RecordingSid, account: string | undefined): Promise<Opened | undefined> {
    const recording = await this.#o.lookup(sid, account);
    const raw = recording?.encryptionDetails;
    if (raw === undefined || raw === null) return undefined;
    const privateKey = keyOf(this.#o.keys, this.#businessId);
    try {
      const details = parseEncryptionDetails(raw);
      const stored = {
        encryptedCek: details.encryptedCek.toString('base64'),
        iv: details.iv.toString('base64'),
      };
      return { key: unwrapContentKey(details, privateKey), stored };
    } catch (err) {
      if (!(err instanceof CannotOpen)) throw err;
      throw createError('RECGATE_RECORDING_ENCRYPTED', { cause: err });
    }
  }
}

/** A recording's unwrapped key, and its wrapped form as the store keeps it. */
interface Opened {
  key: ContentKey;
  stored: StoredEncryption;
}

/**
 * The response kept encrypted (`storeEncrypted`): bytes and sizes as Twilio sent them, marked with how to
 * open them. A whole body's tag is checked as it streams (see {@link verifyWhole}); a range (a seek-ahead
 * slice) passes as it is, and the download that commits the file checks the tag over every byte.
 */
function verifyOrDestroy(response: MediaResponse, opened: Opened, whole: boolean): MediaResponse {
  const cipherTotal = response.totalSize;
  if (cipherTotal !== null && cipherTotal < GCM_TAG_BYTES) {
    response.body.destroy();
    throw new Unusable(tampered(`the body is ${cipherTotal} bytes, shorter than a GCM tag`));
  }
  if (!coversAll(response, whole)) return { ...response, encryption: opened.stored };
  const body = pipe(
    response.body,
    verifyWhole(opened.key, (why, cause) => new Unusable(tampered(why, cause))),
  );
  return { ...response, encryption: opened.stored, body };
}

/**
 * The plaintext response for an encrypted one. `whole`: the request asked for the whole body, so a 206
 * from byte 0 to the end counts as the whole body (and is authenticated) too.
 */
function decrypt(response: MediaResponse, key: ContentKey, whole: boolean): MediaResponse {
  const cipherTotal = response.totalSize;
  if (cipherTotal !== null && cipherTotal < GCM_TAG_BYTES) {
    throw new Unusable(tampered(`the body is ${cipherTotal} bytes, shorter than a GCM tag`));
  }
  const total = cipherTotal === null ? null : plainSize(cipherTotal);
  if (coversAll(response, whole)) {
    const body = pipe(
      response.body,
      openWhole(key, (why, cause) => new Unusable(tampered(why, cause))),
    );
    return {
      ...response,
      contentLength: response.contentLength === null ? null : plainSize(response.contentLength),
      totalSize: total,
      body,
    };
  }
  // A range: only bytes before the tag are plaintext.
  const limit = total === null ? Number.MAX_SAFE_INTEGER : total - response.start;
  if (limit <= 0) {
    throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
      cause: new Error(`the upstream answered a range from ${response.start}, inside the GCM tag`),
    });
  }
  const contentLength = response.contentLength === null ? null : Math.min(response.contentLength, limit);
  return {
    ...response,
    contentLength,
    totalSize: total,
    body: pipe(response.body, openRange(key, response.start, limit)),
  };
}

/**
 * Whether `response` is the whole body: a 200, or, when the request asked for the whole body (`whole`), a
 * 206 from byte 0 to the end.
 */
function coversAll(response: MediaResponse, whole: boolean): boolean {
  return (
    response.start === 0 &&
    (response.status === 200 ||
      (whole && (response.contentLength === null || response.contentLength === response.totalSize)))
  );
}

/** {@link decrypt}, freeing the upstream connection when the response cannot be used. */
function decryptOrDestroy(response: MediaResponse, key: ContentKey, whole: boolean): MediaResponse {
  try {
    return decrypt(response, key, whole);
  } catch (err) {
    response.body.destroy();
    throw err;
  }
}

/** A decrypted body's size: the ciphertext's without its GCM tag. */
export function plainSize(cipherSize: number): number {
  return Math.max(0, cipherSize - GCM_TAG_BYTES);
}

export function tampered(why: string, cause?: unknown) {
  return createError('RECGATE_RECORDING_TAMPERED', {
    cause: cause === undefined ? new Error(why) : new Error(why, { cause }),
  });
}

/**
 * `source` through `transform`: an error of either destroys both (the upstream's own error, a reset or a
 * short body, reaches the reader as it is), and destroying the result frees the upstream connection.
 */
export function pipe(source: Readable, transform: Transform): Readable {
  // The reader sees every error on `transform` itself; the callback has nothing left to do.
  pipeline(source, transform, () => undefined);
  return transform;
}
