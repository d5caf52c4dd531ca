/**
 * Is this upstream body a recording? Pure checks, no I/O, for the download to run before it commits a
 * body as `{sid}.mp3` (issue 9: an HTML error page served as `audio/mpeg`, an empty 200, and a body cut
 * short on a connection close were all stored and served for good).
 *
 * Three checks, in the order a download meets its data:
 * 1. {@link checkContentType} on the response headers: MP3, WAV, unknown (decide by the bytes) or bad.
 * 2. {@link MediaSniffer} on the first bytes: `need-more` until it has seen enough, then `ok` with the
 *    format or `bad` with a reason fit for a log line. It decides on a fixed prefix of the body, so how the
 *    body is split into chunks never changes the answer (reason included).
 * 3. {@link FrameWalker} on every byte, when the upstream sent no Content-Length: at the end it says
 *    whether the body ends exactly where its own framing says it should (`complete`), provably early
 *    (`truncated`), or that it cannot tell (`unknown`).
 *
 * The sniffer and the walker read a body from its first byte: a 206 for a later range starts mid-frame
 * and is judged by the slice that starts at byte 0, or by its Content-Range length.
 *
 * Formats, as Twilio serves recording media:
 * - MP3: MPEG-1 or MPEG-2 audio of any layer, or MPEG-2.5 Layer III (recordings are Layer III; MPEG-2.5
 *   covers the 8, 11.025 and 12 kHz rates of telephone audio), optionally after one or more ID3v2
 *   tags (10-byte header, syncsafe size, plus a 10-byte footer when an ID3v2.4 tag says so), optionally
 *   ending in a 128-byte ID3v1 `TAG` block. Up to {@link MAX_ZERO_PADDING} zero bytes between the ID3v2
 *   tag and the first frame are tolerated, as some taggers leave padding outside the declared size.
 *   Free-format bitrates (index 0) are not accepted: no frame length can be computed for them, and
 *   Twilio never produces them.
 * - WAV: a RIFF file of form `WAVE` (`RIFF`, 32-bit little-endian size, `WAVE`), not preceded by a tag.
 *
 * Policies:
 * - A frame header counts only with a valid 11-bit sync, version, layer, bitrate index, sampling-rate
 *   index and emphasis. The sniffer also wants a second header (same version, layer and sampling rate) or
 *   an ID3v1 `TAG` exactly where the first frame ends, whenever the body is long enough to have one.
 *   Text (HTML, JSON, XML, plain) cannot pass: UTF-8 and ASCII never contain the byte 0xFF a sync needs.
 * - Bounded work and memory: the sniffer skips ID3v2 tags by counting, without buffering them, refuses
 *   tags larger than `maxTagBytes` in total, and buffers at most {@link SNIFF_WINDOW_BYTES} after them.
 *   The walker keeps a few numbers, whatever the body's size, and reads bytes only at frame starts.
 * - Losing sync is not truncation. When the walker meets bytes that are not a frame header where one
 *   should start (junk between frames, an APEv2 or Lyrics3 tag, a second file appended), it stops walking
 *   and reports `unknown`: the length of such a body says nothing about whether it was cut short, and
 *   refusing a playable recording for a quirk it cannot judge would be worse than storing it.
 */

/** A recording format recgate serves. */
export type MediaFormat = 'mp3' | 'wav';

/** What a Content-Type header says about a media body. */
export type ContentTypeVerdict = MediaFormat | 'unknown' | 'bad';

/** Answer of {@link MediaSniffer}. */
export type SniffResult =
  /** Not enough bytes yet; push more, or call `end()` when the body ended. */
  | { readonly kind: 'need-more' }
  /** The body starts like a recording of this format. */
  | { readonly kind: 'ok'; readonly format: MediaFormat }
  /** The body is not a recording; `reason` is for logs (printable ASCII, a short excerpt at most). */
  | { readonly kind: 'bad'; readonly reason: string };

/** Answer of {@link FrameWalker.end}. */
export type FramingResult =
  /** The body ends exactly where its framing says: after a whole MPEG frame (or ID3v1 tag), or at the RIFF size. */
  | { readonly kind: 'complete'; readonly format: MediaFormat }
  /** The body ends inside a tag, a frame or a frame header, or short of the RIFF size: it was cut short. */
  | { readonly kind: 'truncated'; readonly reason: string }
  /** The framing cannot tell: lost sync, not MP3 or WAV, longer than the RIFF size, or a placeholder size. */
  | { readonly kind: 'unknown'; readonly reason: string };

export interface MediaSnifferOptions {
  /**
   * Largest total size of the leading ID3v2 tags (headers, footers and padding included) before the body
   * counts as bad. The tags are skipped without being buffered, so this bounds the wait, not memory.
   * @default 1048576 (1 MiB)
   */
  maxTagBytes?: number;
}

/** Default of {@link MediaSnifferOptions.maxTagBytes}. */
export const DEFAULT_MAX_TAG_BYTES = 1024 * 1024;
/** Most bytes {@link MediaSniffer} buffers after the ID3v2 tags. */
export const SNIFF_WINDOW_BYTES = 4096;
/** Most zero bytes tolerated between an ID3v2 tag and the first MPEG frame. */
export const MAX_ZERO_PADDING = 2048;
/** Bytes of a body that is not audio that the sniffer looks at to describe it. */
const DESCRIBE_BYTES = 512;
/** Longest excerpt of a non-audio body quoted in a reason. */
const EXCERPT_CHARS = 80;
const ID3V2_HEADER_BYTES = 10;
const ID3V1_BYTES = 128;
const RIFF_HEADER_BYTES = 12;

const MP3_TYPES = new Set(['audio/mpeg', 'audio/mp3', 'audio/mpeg3', 'audio/x-mpeg', 'audio/x-mp3']);
const WAV_TYPES = new Set(['audio/wav', 'audio/x-wav', 'audio/wave', 'audio/vnd.wave']);
const UNTYPED = new Set(['application/octet-stream', 'binary/octet-stream']);
/** RFC 9110 §8.3.1: `type "/" subtype`, both tokens. */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+$/;

/**
 * Classifies a media response's Content-Type. Parameters (`; charset=…`) and case are ignored.
 *
 * - `mp3`: `audio/mpeg` (what Twilio sends), `audio/mp3`, `audio/mpeg3`, `audio/x-mpeg`, `audio/x-mp3`.
 * - `wav`: `audio/x-wav` (what Twilio sends), `audio/wav`, `audio/wave`, `audio/vnd.wave`.
 * - `unknown`: no header, an empty or malformed one (RFC 9110 lets a recipient then examine the data), or
 *   `application/octet-stream` / `binary/octet-stream` (storage services' "no idea"): the sniffer decides.
 * - `bad`: any other well-formed type, `text/*`, `application/json`, `application/xml` and HTML included.
 *   recgate serves only MP3 and WAV, so a body declared as anything else is not the recording asked for.
 *
 * A declared `mp3` or `wav` must still agree with the bytes: see {@link declaredTypeConflict}.
 */
export function checkContentType(contentType: string | null | undefined): ContentTypeVerdict {
  if (contentType === null || contentType === undefined) return 'unknown';
  const semicolon = contentType.indexOf(';');
  const essence = (semicolon < 0 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
  if (!MEDIA_TYPE.test(essence)) return 'unknown';
  if (MP3_TYPES.has(essence)) return 'mp3';
  if (WAV_TYPES.has(essence)) return 'wav';
  if (UNTYPED.has(essence)) return 'unknown';
  return 'bad';
}

/**
 * Why a Content-Type verdict contradicts the format the sniffer found, or `null` when they agree (an
 * `unknown` type agrees with any format). A body declared `audio/mpeg` that turns out to be WAV is not
 * what the URL asked for, however playable.
 */
export function declaredTypeConflict(declared: ContentTypeVerdict, actual: MediaFormat): string | null {
  if (declared === 'unknown' || declared === actual) return null;
  if (declared === 'bad') return 'the Content-Type is not MP3 or WAV audio';
  return `the Content-Type says ${declared.toUpperCase()} but the body is ${actual.toUpperCase()}`;
}

const NEED_MORE: SniffResult = { kind: 'need-more' };
const OK_MP3: SniffResult = { kind: 'ok', format: 'mp3' };
const OK_WAV: SniffResult = { kind: 'ok', format: 'wav' };

function bad(reason: string): SniffResult {
  return { kind: 'bad', reason };
}

/**
 * Decides from the first bytes of a body whether it is an MP3 or a WAV. Feed it the body's chunks in
 * order with {@link push} (chunks may split anywhere, down to single bytes) until the answer is not
 * `need-more`, and call {@link end} if the body ends first. Once the answer is `ok` or `bad` it never
 * changes, and later pushes are ignored.
 *
 * What it needs before answering: the ID3v2 tags (skipped, counted, not buffered), then at most
 * {@link SNIFF_WINDOW_BYTES}: up to {@link MAX_ZERO_PADDING} zero bytes, the first MPEG frame and the next
 * frame's header; or the 12-byte RIFF header; or 512 bytes (or the whole body if shorter) of anything
 * else, which it then describes (`an HTML page, not MP3 or WAV audio, titled Twilio - Service Unavailable`).
 *
 * Bad, with a reason: an empty body; an ID3v2 tag that is malformed, larger than `maxTagBytes` or never
 * ends; a tag with no audio after it; a first frame header that is invalid, or not followed by a second
 * one where the first frame ends; a body that ends inside its first frame or the RIFF header; a RIFF file
 * of another form than WAVE; HTML, XML, JSON, text or unrecognised binary data.
 */
export class MediaSniffer {
  readonly #maxTagBytes: number;
  #result: SniffResult = NEED_MORE;
  /** `tag-header`: at a position where an ID3v2 tag may start; `tag-body`: skipping one; `probe`: after them. */
  #phase: 'tag-header' | 'tag-body' | 'probe' = 'tag-header';
  readonly #head = Buffer.alloc(ID3V2_HEADER_BYTES);
  #headLength = 0;
  #skip = 0;
  /** Total bytes of the ID3v2 tags met so far, headers included. */
  #tagBytes = 0;
  #window: Buffer | undefined;
  #windowLength = 0;

  constructor(options: MediaSnifferOptions = {}) {
    const maxTagBytes = options.maxTagBytes ?? DEFAULT_MAX_TAG_BYTES;
    if (!Number.isSafeInteger(maxTagBytes) || maxTagBytes < ID3V2_HEADER_BYTES) {
      throw new RangeError(`options.maxTagBytes must be an integer >= ${ID3V2_HEADER_BYTES}`);
    }
    this.#maxTagBytes = maxTagBytes;
  }

  /** Feeds the next chunk of the body; returns the answer so far. */
  push(chunk: Uint8Array): SniffResult {
    let i = 0;
    while (i < chunk.length && this.#result.kind === 'need-more') {
      if (this.#phase === 'tag-body') {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        if (this.#skip === 0) this.#phase = 'tag-header';
      } else if (this.#phase === 'tag-header') {
        this.#head[this.#headLength++] = chunk[i++]!;
        this.#afterHeadByte();
      } else {
        const window = this.#allocWindow();
        const n = Math.min(SNIFF_WINDOW_BYTES - this.#windowLength, chunk.length - i);
        window.set(chunk.subarray(i, i + n), this.#windowLength);
        this.#windowLength += n;
        i += n;
        this.#result = this.#decide(false);
        if (this.#result.kind === 'need-more' && this.#windowLength === SNIFF_WINDOW_BYTES) {
          // Unreachable by the rules' bounds (padding + longest frame + a header < the window); never spin.
          this.#result = bad(`no verdict within ${SNIFF_WINDOW_BYTES} bytes after the ID3v2 tags`);
        }
      }
    }
    return this.#result;
  }

  /** The body ended: the final answer, `ok` or `bad`, never `need-more`. */
  end(): SniffResult {
    if (this.#result.kind !== 'need-more') return this.#result;
    if (this.#phase === 'tag-body') {
      const tagEnd = this.#tagBytes;
      this.#result = bad(
        `the body ends inside an ID3v2 tag, ${this.#skip} bytes short of its end at byte ${tagEnd}`,
      );
    } else if (this.#phase === 'tag-header' && this.#headLength >= 3) {
      this.#result = bad(`the body ends inside an ID3v2 tag header, at byte ${this.#tagBytes}`);
    } else {
      if (this.#phase === 'tag-header') this.#toProbe();
      this.#result = this.#decide(true);
    }
    return this.#result;
  }

  #afterHeadByte(): void {
    const head = this.#head;
    const n = this.#headLength;
    if (n <= 3 && head[n - 1] !== 'ID3'.charCodeAt(n - 1)) {
      this.#toProbe();
      this.#result = this.#decide(false);
      return;
    }
    if (n < ID3V2_HEADER_BYTES) return;
    const tag = id3v2TagLength(head, 0);
    if (typeof tag === 'string') {
      this.#result = bad(`a malformed ID3v2 tag header at byte ${this.#tagBytes}: ${tag}`);
      return;
    }
    this.#tagBytes += tag;
    if (this.#tagBytes > this.#maxTagBytes) {
      this.#result = bad(
        `ID3v2 tags of ${this.#tagBytes} bytes before the audio, more than the ${this.#maxTagBytes} allowed`,
      );
      return;
    }
    this.#headLength = 0;
    this.#skip = tag - ID3V2_HEADER_BYTES;
    this.#phase = this.#skip > 0 ? 'tag-body' : 'tag-header';
  }

  /** Moves the bytes held at a possible tag start into the window: they were not an ID3v2 tag. */
  #toProbe(): void {
    this.#phase = 'probe';
    this.#allocWindow().set(this.#head.subarray(0, this.#headLength), 0);
    this.#windowLength = this.#headLength;
    this.#headLength = 0;
  }

  #allocWindow(): Buffer {
    this.#window ??= Buffer.alloc(SNIFF_WINDOW_BYTES);
    return this.#window;
  }

  /**
   * The verdict on the window, which holds the body from the end of the ID3v2 tags on. Every rule looks
   * at a fixed prefix only, so the verdict for a prefix holds for every longer one: chunking cannot
   * change it.
   */
  #decide(ended: boolean): SniffResult {
    const w = this.#window!.subarray(0, this.#windowLength);
    const base = this.#tagBytes;
    const tagged = base > 0;
    let p = 0;
    if (tagged) {
      while (p < w.length && p <= MAX_ZERO_PADDING && w[p] === 0) p++;
      if (p > MAX_ZERO_PADDING) {
        return bad(`more than ${MAX_ZERO_PADDING} zero bytes after the ID3v2 tag, at byte ${base}`);
      }
    }
    if (p === w.length) {
      if (!ended) return NEED_MORE;
      if (!tagged) return bad('an empty body');
      return bad(p > 0 ? 'only zero bytes after the ID3v2 tag' : 'an ID3v2 tag with nothing after it');
    }
    if (w[p] === 0xff) return decideMpeg(w, p, base, ended);
    if (!tagged && startsWith(w, 'RIFF')) return decideRiff(w, ended);
    if (!tagged && !ended && w.length < 4 && 'RIFF'.startsWith(w.toString('latin1'))) return NEED_MORE;
    if (!ended && w.length - p < DESCRIBE_BYTES) return NEED_MORE;
    return bad(describeNotAudio(w.subarray(p, p + DESCRIBE_BYTES), base + p));
  }
}

function decideMpeg(w: Buffer, p: number, base: number, ended: boolean): SniffResult {
  if (w.length - p < 4) {
    return ended ? bad(`the body ends inside the first MPEG frame header, at byte ${base + p}`) : NEED_MORE;
  }
  const header = w.readUInt32BE(p);
  const length = frameLength(header);
  if (length === 0) {
    return bad(`not MPEG audio: ${frameHeaderProblem(header)} in the frame header at byte ${base + p}`);
  }
  const next = p + length;
  if (w.length < next + 4) {
    if (!ended) return NEED_MORE;
    if (w.length < next) {
      return bad(
        `the body ends inside the first MPEG frame (${w.length - p} of its ${length} bytes, at byte ${base + p})`,
      );
    }
    // One whole frame and the end, give or take a few bytes: an MP3. Whether it ends well is the walker's call.
    return OK_MP3;
  }
  const second = w.readUInt32BE(next);
  if (frameLength(second) > 0 && streamKey(second) === streamKey(header)) return OK_MP3;
  if (second >>> 8 === TAG) return OK_MP3;
  return bad(
    `not MPEG audio: the frame at byte ${base + p} is not followed by another frame header at byte ${base + next}`,
  );
}

function decideRiff(w: Buffer, ended: boolean): SniffResult {
  if (w.length < RIFF_HEADER_BYTES) return ended ? bad('the body ends inside the RIFF header') : NEED_MORE;
  const form = w.toString('latin1', 8, 12);
  if (form !== 'WAVE') return bad(`a RIFF file of form "${printable(form)}", not WAVE`);
  return OK_WAV;
}

/** Describes a body that is neither MP3 nor WAV, from its first bytes, ending with an excerpt. */
function describeNotAudio(sample: Buffer, at: number): string {
  let start = 0;
  if (sample[0] === 0xef && sample[1] === 0xbb && sample[2] === 0xbf) start = 3;
  const text = sample.toString('latin1', start).replace(/^\s+/, '');
  const lower = text.toLowerCase();
  const where = at > 0 ? ` (from byte ${at})` : '';
  if (/^<!doctype html|<html[\s>]|<head[\s>]|<body[\s>]|<title[\s>]/.test(lower)) {
    const title = /<title[^>]*>([^<]*)/i.exec(text)?.[1]?.trim();
    return title
      ? `an HTML page${where}, not MP3 or WAV audio, titled ${excerpt(title)}`
      : `an HTML page${where}, not MP3 or WAV audio, starting ${excerpt(text)}`;
  }
  if (lower.startsWith('<'))
    return `an XML document${where}, not MP3 or WAV audio, starting ${excerpt(text)}`;
  if (lower.startsWith('{') || lower.startsWith('[')) {
    return `JSON${where}, not MP3 or WAV audio, starting ${excerpt(text)}`;
  }
  if (isText(sample.subarray(start))) return `text${where}, not MP3 or WAV audio, starting ${excerpt(text)}`;
  const hex = [...sample.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  return `neither MP3 nor WAV${where}: the body starts with bytes ${hex}`;
}

/** No control characters but tab, CR and LF; bytes above 0x7F may be UTF-8. */
function isText(bytes: Uint8Array): boolean {
  for (const b of bytes) {
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f) return false;
  }
  return true;
}

/** At most {@link EXCERPT_CHARS} printable ASCII characters, whitespace runs collapsed, `...` if cut. */
function excerpt(text: string): string {
  const flat = printable(text.replace(/\s+/g, ' ').trim());
  return flat.length > EXCERPT_CHARS ? `${flat.slice(0, EXCERPT_CHARS - 3)}...` : flat;
}

/** Latin-1 text with everything but printable ASCII replaced by `?`: safe in a log line. */
function printable(text: string | Uint8Array): string {
  const latin1 = typeof text === 'string' ? text : Buffer.from(text).toString('latin1');
  return latin1.replace(/[^\x20-\x7e]/g, '?');
}

function startsWith(bytes: Buffer, prefix: string): boolean {
  return bytes.length >= prefix.length && bytes.toString('latin1', 0, prefix.length) === prefix;
}

/** Whether the whole body is an MP3 or WAV, by {@link MediaSniffer}: a convenience for bodies in memory. */
export function sniffMedia(body: Uint8Array, options?: MediaSnifferOptions): SniffResult {
  const sniffer = new MediaSniffer(options);
  sniffer.push(body);
  return sniffer.end();
}

/** `TAG` as the top three bytes of a 32-bit big-endian read. */
const TAG = 0x544147;
const LOST_SYNC = 'no frame header where a frame should start';

type WalkState = 'start' | 'id3v2' | 'padding' | 'frames' | 'id3v1' | 'riff' | 'lost' | 'unknown';

/**
 * Walks a body's framing as it streams, to tell a whole body from one cut short when the upstream sent
 * no Content-Length and ended it by closing the connection. Feed it every chunk in order with
 * {@link push}; {@link end} then answers `complete`, `truncated` or `unknown` (see {@link FramingResult}).
 *
 * - MP3: it skips the ID3v2 tags and up to {@link MAX_ZERO_PADDING} zero bytes after them, then jumps from
 *   frame header to frame header by the lengths the headers give (every header must be valid and of the
 *   first frame's version, layer and sampling rate). The body is complete if it ends exactly after a
 *   frame, or after a 128-byte ID3v1 `TAG` block that follows the last frame.
 * - WAV: the RIFF size says the total length (`8 + size`); the body is complete if it is exactly that long.
 *   A size of 0 or 0xFFFFFFFF (a writer that never went back to fill it in) makes the answer `unknown`.
 *
 * A body cut exactly at a frame boundary looks complete: framing cannot see that cut, only a length can.
 * A body that is a proper prefix of a valid start (empty, inside a tag, before the first frame) is
 * `truncated`. Junk where a frame header should be makes the walker stop and answer `unknown`, never
 * `truncated` (see the module comment). Memory is constant; per chunk it reads only the bytes of headers,
 * and jumps over frame bodies by arithmetic.
 */
export class FrameWalker {
  #state: WalkState = 'start';
  /** Bytes fed before the current chunk. */
  #offset = 0;
  /** Bytes still to jump over: the rest of an ID3v2 tag, a frame or the ID3v1 tag. */
  #skip = 0;
  /** The ID3v2 or RIFF header being read at the start (or after a tag). */
  readonly #head = Buffer.alloc(RIFF_HEADER_BYTES);
  #headLength = 0;
  /** The frame header being read, big-endian, `#headerLength` bytes of it. */
  #header = 0;
  #headerLength = 0;
  /** Where the tag or frame being read started, and how long it is, for reasons. */
  #unitStart = 0;
  #unitLength = 0;
  /** Version, layer and sampling-rate bits of the first frame; -1 before it. */
  #streamKey = -1;
  #frames = 0;
  #tagged = false;
  #padding = 0;
  #riffEnd = 0;
  #reason = '';

  /** MPEG frames walked so far (frames whose whole header was seen). */
  get frames(): number {
    return this.#frames;
  }

  /** Bytes fed so far. */
  get bytes(): number {
    return this.#offset;
  }

  /** Feeds the next chunk of the body. */
  push(chunk: Uint8Array): void {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.#skip > 0) {
        const s = Math.min(this.#skip, n - i);
        this.#skip -= s;
        i += s;
        if (this.#skip === 0 && this.#state === 'id3v2') this.#state = 'start';
        continue;
      }
      const byte = chunk[i]!;
      const at = this.#offset + i;
      switch (this.#state) {
        case 'frames': {
          const next = this.#headerLength === 0 ? this.#walkWholeHeaders(chunk, i) : i;
          if (next === i) {
            this.#frameByte(byte, at);
            i++;
          } else {
            i = next;
          }
          break;
        }
        case 'start':
          if (this.#headLength === 0) {
            if (byte === 0xff) {
              this.#state = 'frames';
              break;
            }
            if (this.#tagged && byte === 0) {
              this.#state = 'padding';
              break;
            }
            if (byte !== 0x49 && (this.#tagged || byte !== 0x52)) {
              this.#stop(this.#tagged ? 'no MPEG frame after the ID3v2 tag' : 'neither MP3 nor WAV');
              break;
            }
            this.#unitStart = at;
          }
          this.#head[this.#headLength++] = byte;
          i++;
          this.#startByte();
          break;
        case 'padding':
          if (byte === 0xff) {
            this.#state = 'frames';
          } else if (byte !== 0) {
            this.#stop('no MPEG frame after the ID3v2 tag');
          } else if (++this.#padding > MAX_ZERO_PADDING) {
            this.#stop(`more than ${MAX_ZERO_PADDING} zero bytes after the ID3v2 tag`);
          } else {
            i++;
          }
          break;
        case 'id3v1':
          this.#lose(at, 'bytes after the ID3v1 tag');
          break;
        default:
          // riff: the length alone decides; lost, unknown: the verdict is in.
          i = n;
      }
    }
    this.#offset += n;
  }

  /** The body ended: whether its framing says it is whole. */
  end(): FramingResult {
    const offset = this.#offset;
    switch (this.#state) {
      case 'lost':
      case 'unknown':
        return { kind: 'unknown', reason: this.#reason };
      case 'riff':
        if (offset === this.#riffEnd) return { kind: 'complete', format: 'wav' };
        if (offset < this.#riffEnd) {
          return {
            kind: 'truncated',
            reason: `the body ends at byte ${offset} of the ${this.#riffEnd} its RIFF size gives`,
          };
        }
        return {
          kind: 'unknown',
          reason: `the body runs ${offset - this.#riffEnd} bytes beyond the ${this.#riffEnd} its RIFF size gives`,
        };
      case 'id3v2':
        return {
          kind: 'truncated',
          reason: `the body ends inside the ${this.#unitLength}-byte ID3v2 tag at byte ${this.#unitStart}`,
        };
      case 'start':
      case 'padding':
        return {
          kind: 'truncated',
          reason:
            this.#headLength > 0
              ? `the body ends inside the header at byte ${this.#unitStart}`
              : `the body ends at byte ${offset}, before any audio`,
        };
      case 'id3v1':
        if (this.#skip === 0) return { kind: 'complete', format: 'mp3' };
        return { kind: 'truncated', reason: `the body ends inside the ID3v1 tag at byte ${this.#unitStart}` };
      case 'frames':
        if (this.#skip > 0) {
          return {
            kind: 'truncated',
            reason: `the body ends ${offset - this.#unitStart} bytes into the ${this.#unitLength}-byte MPEG frame at byte ${this.#unitStart}`,
          };
        }
        if (this.#headerLength > 0) {
          return {
            kind: 'truncated',
            reason: `the body ends inside the frame header at byte ${this.#unitStart}`,
          };
        }
        return { kind: 'complete', format: 'mp3' };
    }
  }

  /**
   * The fast path: jumps from frame to frame while whole headers lie inside `chunk`, starting at a frame
   * start `i`. Returns where it stopped: at the end of the chunk (with `#skip` set to the rest of the last
   * frame), at a header split across chunks, or at bytes that are no valid frame header of this stream,
   * which {@link #frameByte} then judges byte by byte (an ID3v1 tag, or lost sync). Returns `i` itself
   * when not even the first header passed.
   */
  #walkWholeHeaders(chunk: Uint8Array, i: number): number {
    const n = chunk.length;
    let key = this.#streamKey;
    let frames = this.#frames;
    let start = i;
    let length = this.#unitLength;
    while (i + 4 <= n) {
      const header = ((chunk[i]! << 24) | (chunk[i + 1]! << 16) | (chunk[i + 2]! << 8) | chunk[i + 3]!) >>> 0;
      const frame = frameLength(header);
      if (frame === 0 || (key >= 0 && streamKey(header) !== key)) break;
      key = streamKey(header);
      frames++;
      start = i;
      length = frame;
      i += frame;
    }
    if (frames !== this.#frames) {
      this.#streamKey = key;
      this.#frames = frames;
      this.#unitStart = this.#offset + start;
      this.#unitLength = length;
    }
    if (i > n) {
      this.#skip = i - n;
      return n;
    }
    return i;
  }

  /** One byte where a frame header (or the ID3v1 tag) must start or continue. */
  #frameByte(byte: number, at: number): void {
    const header = ((this.#header << 8) | byte) >>> 0;
    const length = ++this.#headerLength;
    this.#header = header;
    if (length === 1) {
      this.#unitStart = at;
      if (byte !== 0xff && byte !== 0x54) this.#lose(at, LOST_SYNC);
    } else if (length === 2) {
      const sync = header >>> 8 === 0xff && (byte & 0xe0) === 0xe0;
      if (!sync && header !== 0x5441) this.#lose(at - 1, LOST_SYNC);
    } else if (length === 3) {
      if (header === TAG) {
        this.#state = 'id3v1';
        this.#unitLength = ID3V1_BYTES;
        this.#skip = ID3V1_BYTES - 3;
        this.#resetHeader();
      } else if (header >>> 16 !== 0xff) {
        this.#lose(at - 2, LOST_SYNC);
      }
    } else {
      const frame = frameLength(header);
      const key = streamKey(header);
      if (frame === 0 || (this.#streamKey >= 0 && key !== this.#streamKey)) {
        this.#lose(at - 3, LOST_SYNC);
        return;
      }
      this.#streamKey = key;
      this.#frames++;
      this.#unitLength = frame;
      this.#skip = frame - 4;
      this.#resetHeader();
    }
  }

  /** After one more byte of a would-be ID3v2 (`I…`) or RIFF (`R…`) header. */
  #startByte(): void {
    const head = this.#head;
    const n = this.#headLength;
    const magic = head[0] === 0x49 ? 'ID3' : 'RIFF';
    if (n <= magic.length) {
      if (head[n - 1] !== magic.charCodeAt(n - 1)) this.#stop('neither MP3 nor WAV');
      return;
    }
    if (magic === 'ID3') {
      if (n < ID3V2_HEADER_BYTES) return;
      const tag = id3v2TagLength(head, 0);
      this.#headLength = 0;
      if (typeof tag === 'string') {
        this.#stop(`a malformed ID3v2 tag header at byte ${this.#unitStart}: ${tag}`);
        return;
      }
      this.#tagged = true;
      this.#unitLength = tag;
      this.#skip = tag - ID3V2_HEADER_BYTES;
      this.#state = this.#skip > 0 ? 'id3v2' : 'start';
      return;
    }
    if (n < RIFF_HEADER_BYTES) return;
    const size = head.readUInt32LE(4);
    const form = head.toString('latin1', 8, 12);
    this.#headLength = 0;
    if (form !== 'WAVE') {
      this.#stop(`a RIFF file of form "${printable(head.subarray(8, 12))}", not WAVE`);
    } else if (size === 0 || size === 0xffffffff) {
      this.#stop(`the RIFF size is a placeholder (${size}): a WAV written as a stream`);
    } else {
      this.#state = 'riff';
      this.#riffEnd = 8 + size;
    }
  }

  #resetHeader(): void {
    this.#header = 0;
    this.#headerLength = 0;
  }

  #lose(at: number, what: string): void {
    this.#state = 'lost';
    this.#reason = `lost frame sync at byte ${at} after ${this.#frames} frames (${what}): the framing cannot tell whether the body is whole`;
  }

  #stop(reason: string): void {
    this.#state = 'unknown';
    this.#reason = reason;
  }
}

/** The framing verdict on a whole body in memory, by {@link FrameWalker}. */
export function walkFrames(body: Uint8Array): FramingResult {
  const walker = new FrameWalker();
  walker.push(body);
  return walker.end();
}

/**
 * Length of the ID3v2 tag whose header starts at `offset` (header, body and v2.4 footer), or why the
 * header is malformed. Needs 10 bytes from `offset`.
 */
export function id3v2TagLength(bytes: Uint8Array, offset: number): number | string {
  const major = bytes[offset + 3]!;
  const revision = bytes[offset + 4]!;
  const flags = bytes[offset + 5]!;
  if (major < 2 || major > 4) return `unknown version 2.${major}`;
  if (revision === 0xff) return 'revision 0xFF';
  let size = 0;
  for (let k = 6; k < 10; k++) {
    const b = bytes[offset + k]!;
    if (b >= 0x80) return 'a size byte with its high bit set (not syncsafe)';
    size = (size << 7) | b;
  }
  const footer = major === 4 && (flags & 0x10) !== 0 ? ID3V2_HEADER_BYTES : 0;
  return ID3V2_HEADER_BYTES + size + footer;
}

/** kbit/s by [MPEG-1 ? 0 : 1][layer bits][bitrate index]; layer bits 3 = I, 2 = II, 1 = III. */
const BITRATES: ReadonlyArray<ReadonlyArray<readonly number[]>> = [
  [
    [],
    [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
  ],
  [
    [],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
  ],
];
/** Hz by version bits (0 = MPEG-2.5, 2 = MPEG-2, 3 = MPEG-1) and sampling-rate index. */
const SAMPLE_RATES: ReadonlyArray<readonly number[]> = [
  [11025, 12000, 8000],
  [],
  [22050, 24000, 16000],
  [44100, 48000, 32000],
];

/**
 * Frame length in bytes by header bits 20..9 (version, layer, protection, bitrate index, sampling-rate
 * index, padding); 0 where a field is invalid. Built once, so the walker's per-frame cost is one lookup.
 */
const FRAME_LENGTHS = (() => {
  const table = new Uint16Array(1 << 12);
  for (let key = 0; key < table.length; key++) {
    const version = (key >>> 10) & 3;
    const layer = (key >>> 8) & 3;
    const bitrateIndex = (key >>> 3) & 15;
    const rateIndex = (key >>> 1) & 3;
    const padding = key & 1;
    const reserved = version === 1 || layer === 0 || rateIndex === 3;
    // MPEG-2.5 is Fraunhofer's extension of Layer III only.
    const unknownLayer = version === 0 && layer !== 1;
    if (reserved || unknownLayer || bitrateIndex === 0 || bitrateIndex === 15) continue;
    const kbps = BITRATES[version === 3 ? 0 : 1]![layer]![bitrateIndex]!;
    const rate = SAMPLE_RATES[version]![rateIndex]!;
    if (layer === 3) table[key] = (Math.floor((12_000 * kbps) / rate) + padding) * 4;
    else if (layer === 2 || version === 3) table[key] = Math.floor((144_000 * kbps) / rate) + padding;
    else table[key] = Math.floor((72_000 * kbps) / rate) + padding;
  }
  return table;
})();

/** Length of the MPEG audio frame with this 32-bit header, or 0 if the header is not valid. */
export function frameLength(header: number): number {
  if (header >>> 21 !== 0x7ff || (header & 3) === 2) return 0;
  return FRAME_LENGTHS[(header >>> 9) & 0xfff]!;
}

/** Sampling rate in Hz of a frame whose header {@link frameLength} accepts. */
export function frameSampleRate(header: number): number {
  return SAMPLE_RATES[(header >>> 19) & 3]![(header >>> 10) & 3]!;
}

/** Version, layer and sampling-rate bits: the same in every frame of one stream. */
function streamKey(header: number): number {
  return (header >>> 10) & 0x783;
}

/** Why a 32-bit header is not a valid MPEG audio frame header. */
function frameHeaderProblem(header: number): string {
  const version = (header >>> 19) & 3;
  const layer = (header >>> 17) & 3;
  const bitrateIndex = (header >>> 12) & 15;
  if (header >>> 21 !== 0x7ff) return 'no 11-bit frame sync';
  if (version === 1) return 'the reserved MPEG version';
  if (layer === 0) return 'the reserved layer';
  if (version === 0 && layer !== 1) return 'MPEG-2.5 with a layer other than III';
  if (bitrateIndex === 0) return 'a free-format bitrate';
  if (bitrateIndex === 15) return 'the invalid bitrate index 15';
  if (((header >>> 10) & 3) === 3) return 'the reserved sampling-rate index';
  return 'the reserved emphasis';
}
