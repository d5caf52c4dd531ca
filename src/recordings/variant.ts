/**
 * Renditions of one recording that Twilio serves and recgate caches side by side: the canonical mono MP3
 * (`{callSid}.mp3`, what `/download` serves by default), the dual-channel file (`RequestedChannels=2` on
 * the media URL: each call leg on its own channel) and the WAV media (the media URL with `.wav`).
 *
 * Each variant is its own cache entry with its own key: the owner call SID for the canonical file, with
 * `.dual` and/or `.wav` after it for the others. The key names the entry everywhere: the download lock, the
 * in-process flight, the cache-index row and the files (`{key}.mp3`, or `{key}` itself for WAV):
 *
 * | channels | format | key             | file              |
 * | -------- | ------ | --------------- | ----------------- |
 * | 1        | mp3    | `CA…`           | `CA….mp3`         |
 * | 2        | mp3    | `CA….dual`      | `CA….dual.mp3`    |
 * | 1        | wav    | `CA….wav`       | `CA….wav`         |
 * | 2        | wav    | `CA….dual.wav`  | `CA….dual.wav`    |
 */
import { createError } from '../errors.js';

/** Audio channels Twilio can deliver: 1 (mixed) or 2 (each leg on its own channel). */
export type Channels = 1 | 2;
/** Media formats Twilio serves a recording in. */
export type AudioFormat = 'mp3' | 'wav';

export interface Variant {
  channels: Channels;
  format: AudioFormat;
}

/** The canonical variant: what a request without `channels` or `format` gets. */
export const CANONICAL: Readonly<Variant> = Object.freeze({ channels: 1, format: 'mp3' });

/** Every variant, the canonical one first. */
export const VARIANTS: ReadonlyArray<Readonly<Variant>> = Object.freeze([
  CANONICAL,
  Object.freeze({ channels: 2, format: 'mp3' } as const),
  Object.freeze({ channels: 1, format: 'wav' } as const),
  Object.freeze({ channels: 2, format: 'wav' } as const),
]);

/**
 * A cache key as a regular expression source: an id of the store's alphabet and its variant suffix. Locks
 * and the store accept exactly these.
 */
export const KEY_PATTERN = '[A-Za-z0-9_-]{1,128}(?:\\.dual)?(?:\\.wav)?';

/** `.dual`, `.wav`, `.dual.wav`, or `''` for the canonical variant. */
export function variantSuffix(variant: Variant | undefined): string {
  if (variant === undefined) return '';
  return `${variant.channels === 2 ? '.dual' : ''}${variant.format === 'wav' ? '.wav' : ''}`;
}

/** The cache key of `variant` of the recording owned by `ownerCallSid`. */
export function variantKey(ownerCallSid: string, variant?: Variant): string {
  return `${ownerCallSid}${variantSuffix(variant)}`;
}

/** Whether `variant` is the canonical mono MP3. */
export function isCanonical(variant: Variant | undefined): boolean {
  return variant === undefined || (variant.channels === 1 && variant.format === 'mp3');
}

/** The finished file's name for a cache key: `{key}.mp3`, or the key itself when it ends in `.wav`. */
export function fileNameOf(key: string): string {
  return key.endsWith('.wav') ? key : `${key}.mp3`;
}

/** The cache key a finished file's name stands for (the inverse of {@link fileNameOf}). */
export function keyOfFileName(name: string): string {
  return name.endsWith('.mp3') ? name.slice(0, -4) : name;
}

/**
 * The entity tag a variant of a recording is served with: the recording SID and size, plus the variant's
 * suffix for any but the canonical file (whose tag predates variants), so two renditions never share one.
 */
export function recordingEtag(
  ref: { recordingSid: string; variant?: Variant | undefined },
  size: number,
): string {
  return `"${ref.recordingSid}${variantSuffix(ref.variant)}-${size}"`;
}

/** The owner call SID of a cache key: the key without its variant suffix. */
export function ownerOfKey(key: string): string {
  const dot = key.indexOf('.');
  return dot < 0 ? key : key.slice(0, dot);
}

/** The Content-Type a variant is served with. */
export function contentTypeOf(variant: Variant | undefined): string {
  return variant?.format === 'wav' ? 'audio/wav' : 'audio/mpeg';
}

/**
 * The variant a query asks for: `channels` (`1` or `2`, default 1) and `format` (`mp3` or `wav`, default
 * mp3). Anything else (another value, a repeated parameter) is RECGATE_INVALID_REQUEST naming the field.
 */
export function parseVariant(query: Record<string, unknown>): Variant {
  const { channels, format } = query;
  if (channels !== undefined && channels !== '1' && channels !== '2') {
    throw createError('RECGATE_INVALID_REQUEST', { message: 'channels must be 1 or 2' });
  }
  if (format !== undefined && format !== 'mp3' && format !== 'wav') {
    throw createError('RECGATE_INVALID_REQUEST', { message: 'format must be mp3 or wav' });
  }
  return { channels: channels === '2' ? 2 : 1, format: format === 'wav' ? 'wav' : 'mp3' };
}

/** The query parameters that ask for `variant` (none for the canonical one), for URLs recgate hands out. */
export function variantQuery(variant: Variant | undefined): Record<string, string> {
  if (variant === undefined) return {};
  return {
    ...(variant.channels === 2 ? { channels: '2' } : {}),
    ...(variant.format === 'wav' ? { format: 'wav' } : {}),
  };
}
