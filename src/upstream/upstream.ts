/**
 * What recgate needs from the recording provider (Twilio). `twilio-client.ts` implements it with undici
 * against Twilio's REST API (or `recgate emulator`). Code outside this folder names only {@link Upstream}.
 * The client and every test double of it pass one contract suite, test/upstream/contract.ts.
 *
 * A signal aborted while a method is pending makes it reject, and one aborted while a media body streams
 * makes the body error; the error is an `AbortError` for a signal aborted without a reason of its own.
 */
import type { Readable } from 'node:stream';
import type { StoredEncryption } from '../recordings/store/store.js';
import type { Variant } from '../recordings/variant.js';
import type { CallSid, RecordingSid } from '../sid.js';

export interface UpstreamCall {
  sid: CallSid;
  parentCallSid: CallSid | null;
  direction: string | null;
  from: string | null;
  to: string | null;
  startTime: string | null;
  durationS: number | null;
  status: string | null;
}

export interface UpstreamRecording {
  sid: RecordingSid;
  callSid: CallSid;
  /** Twilio's status: `in-progress`, `paused`, `stopped`, `processing`, `completed`, `absent`, `deleted`, `failed`. */
  status: string;
  durationS: number | null;
  dateCreated: string | null;
  /**
   * Twilio's `encryption_details` as it gave them, present only for a recording encrypted with Voice
   * Recording Encryption (its media is then ciphertext; `recordings/decrypt/` opens it).
   */
  encryptionDetails?: unknown;
}

export interface MediaRequest {
  /** Aborts the request and its body. */
  signal?: AbortSignal | undefined;
  /** First byte wanted (inclusive). Asks for a Range, which an upstream may ignore (then a 200 answers). */
  start?: number | undefined;
  /** Last byte wanted (inclusive); omitted means to the end. */
  end?: number | undefined;
  /**
   * `If-Range` validator to send with a Range request (an ETag or HTTP date). If it no longer matches, the
   * whole file answers (200).
   */
  ifRange?: string | undefined;
  /**
   * Which rendition: `channels: 2` asks for the dual-channel file (Twilio's `RequestedChannels=2`), `format:
   * 'wav'` the WAV media. A mono recording asked for as dual throws RECGATE_VARIANT_UNAVAILABLE (Twilio's
   * 16113). @default the mono MP3
   */
  variant?: Variant | undefined;
  /**
   * The Twilio account the recording lives in (`AC…`), as {@link RecordingRef.account} names it: an
   * upstream serving several accounts (src/accounts/router.ts) picks that account's credentials and path;
   * a single-account client refuses any other account (RECGATE_UPSTREAM_AUTH). Omitted: the main account.
   */
  account?: string | undefined;
}

export interface MediaResponse {
  /** 200 for the whole file, 206 when the upstream honoured the Range. */
  status: 200 | 206;
  /** Bytes the body will carry (Content-Length), if the upstream said. */
  contentLength: number | null;
  /** First byte the body carries: 0 for a 200, the Content-Range start for a 206. */
  start: number;
  /** Size of the whole recording: Content-Length of a 200, or the Content-Range total of a 206. */
  totalSize: number | null;
  etag: string | null;
  lastModified: string | null;
  /** The response's Content-Type, if it gave one (checked before a byte of the body is kept). */
  contentType: string | null;
  /** Whether the upstream advertised `Accept-Ranges: bytes` or answered 206. */
  acceptsRanges: boolean;
  /**
   * Set by the decrypting media view with `--store-encrypted` (`recordings/decrypt/media.ts`): the body is
   * the ciphertext and GCM tag of an encrypted recording, kept as it is, and this opens it. A whole body's
   * tag is checked before its last 16 bytes flow. @default absent (the body is the recording)
   */
  encryption?: StoredEncryption | undefined;
  /**
   * The body. It errors (never ends early without an error) if the connection breaks, closes before
   * Content-Length bytes, or stays idle too long. Without Content-Length, a clean close ends it. An error
   * (an abort too) before anyone reads it is kept for the first reader, and never emitted unheard: the
   * download makes its files between the headers and the first read.
   */
  body: Readable;
}

/** What a HEAD on the media says, without its body. */
export interface MediaHead {
  /** Size of the whole recording (Content-Length), if the upstream said. */
  size: number | null;
  etag: string | null;
  lastModified: string | null;
  contentType: string | null;
  /** Whether the upstream advertised `Accept-Ranges: bytes`. */
  acceptsRanges: boolean;
}

/** Which recordings of the account {@link Upstream.listRecordings} lists. */
export interface ListRecordingsOptions {
  /** Only recordings created at or after this instant (Twilio's `DateCreated>=`). */
  dateCreatedAfter?: Date | undefined;
  /** Only recordings created at or before this instant (Twilio's `DateCreated<=`). */
  dateCreatedBefore?: Date | undefined;
  signal?: AbortSignal | undefined;
}

export interface Upstream {
  /** The call, or `undefined` if the upstream does not know it (404). */
  getCall(callSid: CallSid, signal?: AbortSignal): Promise<UpstreamCall | undefined>;

  /**
   * All recordings of a call, each once, following Twilio's paging; none for a call the upstream does not
   * know.
   */
  listCallRecordings(callSid: CallSid, signal?: AbortSignal): Promise<UpstreamRecording[]>;

  /**
   * The account's recordings created in the range (both bounds inclusive, each optional), in any status,
   * each once, following Twilio's paging (newest first, as Twilio lists them).
   */
  listRecordings(options?: ListRecordingsOptions): Promise<UpstreamRecording[]>;

  /**
   * Starts a media download (MP3, or the variant the request names). Retries transient failures (not-ready 404s, 429 with Retry-After, 5xx,
   * resets) with backoff and jitter, bounded in attempts and total time, until response headers arrive.
   * Throws RecgateError: RECGATE_RECORDING_GONE when the recording is deleted upstream,
   * RECGATE_RECORDING_NOT_READY when it stays unavailable, RECGATE_UPSTREAM_UNAVAILABLE / _TIMEOUT / _AUTH.
   */
  fetchMedia(recordingSid: RecordingSid, request?: MediaRequest): Promise<MediaResponse>;

  /**
   * The media's metadata from an HTTP HEAD (Content-Length, ETag, Last-Modified, Content-Type,
   * Accept-Ranges): no body is transferred. Retries and throws as {@link fetchMedia} does, `variant` too.
   */
  headMedia(recordingSid: RecordingSid, signal?: AbortSignal, variant?: Variant): Promise<MediaHead>;

  close(): Promise<void>;
}
