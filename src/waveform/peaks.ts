/**
 * A recording's waveform as a compact array of peaks, computed in one streaming pass over its bytes in
 * bounded memory (a few numbers per 36 ms of audio). Pure: no I/O.
 *
 * - **WAV** (PCM, 8, 16, 24 or 32-bit integer, any channel count): the exact peak, the largest absolute
 *   sample over all channels, per block of {@link WAV_BLOCK_FRAMES} sample frames.
 * - **MP3** (MPEG Layer III): no MP3 decoder ships with recgate (its one audio dependency, lamejs, only
 *   encodes), so the level is estimated from each frame's side information, without decoding the
 *   spectrum: a granule's quantizer step is 2^((global_gain − 210) / 4), and a quantized spectral value
 *   coded with b bits is about 2^b, so with `part2_3_length` bits spread over its `big_values` pairs the
 *   granule's level is about step × 2^((4/3) × bits per value). A granule that carries no spectral bits
 *   (`part2_3_length` = 0) is digital silence: 0. The frame's level is the largest of its granules and
 *   channels. This is a rough envelope: exact where the audio is silent, coarse elsewhere (Scalefactors,
 *   which reshape the spectrum band by band, are not read; on the emulator's speech its correlation with
 *   the true per-frame level is about 0.3 to 0.5), drawn on a logarithmic scale (60 dB below the loudest
 *   frame to 255). An MP3 decoder would make it exact; see the README.
 *
 * Peaks are scaled so that the loudest point of the recording is 255 (0 = silence), the usual way a
 * waveform is drawn: the shape matters, not the absolute level. WAV peaks are linear, MP3 levels
 * logarithmic (see above).
 */
import { frameLength, frameSampleRate, id3v2TagLength } from '../recordings/media-check.js';

/** Peaks kept per recording, and the most a request may ask for. */
export const MAX_POINTS = 2000;
/** Sample frames of a WAV summarized by one value before the peaks are pooled. */
export const WAV_BLOCK_FRAMES = 64;
/** Most bytes of WAV chunks before the `data` chunk (a `LIST` tag, …) that the meter accepts. */
const MAX_WAV_HEADER_BYTES = 1024 * 1024;

export interface Waveform {
  /** The audio's length in seconds (to the millisecond). */
  durationS: number;
  /** At most {@link MAX_POINTS} integers 0..255, evenly spaced over the audio. */
  peaks: number[];
}

/** Why bytes could not be measured: not MP3 Layer III or integer PCM WAV, or no audio in them. */
export class WaveformError extends Error {
  override readonly name = 'WaveformError';
}

/** A growable array of amplitudes (0..1, or MP3 gain scales), one per block or frame. */
class Levels {
  #values = new Float32Array(4096);
  length = 0;

  push(value: number): void {
    if (this.length === this.#values.length) {
      const next = new Float32Array(this.#values.length * 2);
      next.set(this.#values);
      this.#values = next;
    }
    this.#values[this.length++] = value;
  }

  /**
   * Pooled (maximum) into at most `points` buckets and scaled so that the largest is 255: linearly, or with
   * `octaves`, logarithmically over that many octaves below the largest (0 below them).
   */
  peaks(points: number, octaves?: number): number[] {
    const pooled = pool(this.#values.subarray(0, this.length), points);
    let max = 0;
    for (const v of pooled) max = Math.max(max, v);
    if (max === 0) return pooled.map(() => 0);
    if (octaves === undefined) return pooled.map((v) => Math.round((v / max) * 255));
    return pooled.map((v) => (v > 0 ? Math.round(Math.max(0, 1 + Math.log2(v / max) / octaves) * 255) : 0));
  }
}

/** The largest value of each of `points` even slices of `values` (all of them when fewer). */
function pool(values: ArrayLike<number>, points: number): number[] {
  const n = values.length;
  const buckets = Math.min(n, points);
  const out: number[] = [];
  for (let i = 0; i < buckets; i++) {
    const from = Math.floor((i * n) / buckets);
    const to = Math.floor(((i + 1) * n) / buckets);
    let max = 0;
    for (let k = from; k < to; k++) max = Math.max(max, values[k]!);
    out.push(max);
  }
  return out;
}

/** Peaks resampled to at most `points`, each the largest of the peaks it covers. */
export function resample(peaks: readonly number[], points: number): number[] {
  if (!Number.isSafeInteger(points) || points < 1) throw new RangeError('points must be a positive integer');
  return peaks.length <= points ? [...peaks] : pool(peaks, points);
}

/** Feed it a recording's bytes in order; `end()` gives its waveform. */
export class PeakMeter {
  #decoder: Mp3Levels | WavLevels | undefined;
  #head = Buffer.alloc(0);

  push(chunk: Uint8Array): void {
    if (this.#decoder === undefined) {
      // Four bytes tell the formats apart.
      this.#head = Buffer.concat([this.#head, chunk]);
      if (this.#head.length < 4) return;
      this.#decoder = this.#head.toString('latin1', 0, 4) === 'RIFF' ? new WavLevels() : new Mp3Levels();
      const head = this.#head;
      this.#head = Buffer.alloc(0);
      this.#decoder.push(head);
      return;
    }
    this.#decoder.push(chunk);
  }

  /** The waveform; throws {@link WaveformError} when the bytes hold no audio it can measure. */
  end(): Waveform {
    if (this.#decoder === undefined) throw new WaveformError('the recording is empty');
    return this.#decoder.end();
  }
}

/** MPEG Layer III frames, after any ID3v2 tags; amplitude from each frame's side information. */
class Mp3Levels {
  readonly #levels = new Levels();
  #carry = Buffer.alloc(0);
  /** Bytes of a tag still to skip. */
  #skip = 0;
  #started = false;
  #samples = 0;
  #sampleRate = 0;

  push(chunk: Uint8Array): void {
    let buf = this.#carry.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#carry, chunk]);
    let pos = Math.min(this.#skip, buf.length);
    this.#skip -= pos;
    while (buf.length - pos >= 10) {
      if (!this.#started && buf[pos] === 0x49 && buf[pos + 1] === 0x44 && buf[pos + 2] === 0x33) {
        const tag = id3v2TagLength(buf, pos);
        if (typeof tag === 'string') throw new WaveformError(`a malformed ID3v2 tag: ${tag}`);
        const skipped = Math.min(tag, buf.length - pos);
        pos += skipped;
        this.#skip = tag - skipped;
        continue;
      }
      const header = buf.readUInt32BE(pos);
      const length = frameLength(header);
      if (length === 0) {
        // Padding, an ID3v1 tag, junk between frames: look for the next frame header.
        pos++;
        continue;
      }
      if (buf.length - pos < length) break;
      this.#frame(buf, pos, header);
      pos += length;
    }
    buf = buf.subarray(pos);
    this.#carry = Buffer.from(buf);
  }

  #frame(buf: Buffer, pos: number, header: number): void {
    this.#started = true;
    const version = (header >>> 19) & 3;
    const layer = (header >>> 17) & 3;
    if (layer !== 1) return;
    const mpeg1 = version === 3;
    const mono = ((header >>> 6) & 3) === 3;
    const channels = mono ? 1 : 2;
    const granules = mpeg1 ? 2 : 1;
    const sampleRate = frameSampleRate(header);
    if (this.#sampleRate === 0) this.#sampleRate = sampleRate;
    if (sampleRate !== this.#sampleRate) return;
    // Side information: main_data_begin, private bits and (MPEG-1) scfsi, then one block per granule and
    // channel that starts with part2_3_length (12 bits), big_values (9) and global_gain (8).
    const crc = ((header >>> 16) & 1) === 0 ? 16 : 0;
    let bit = (pos + 4) * 8 + crc + (mpeg1 ? (mono ? 18 : 20) : mono ? 9 : 10);
    const block = mpeg1 ? 59 : 63;
    let level = 0;
    for (let g = 0; g < granules * channels; g++, bit += block) {
      const part23 = readBits(buf, bit, 12);
      const bigValues = readBits(buf, bit + 12, 9);
      const gain = readBits(buf, bit + 21, 8);
      if (part23 === 0) continue;
      const bitsPerValue = Math.min(part23 / (2 * bigValues + 1), MAX_BITS_PER_VALUE);
      level = Math.max(level, 2 ** ((gain - 210) / 4 + (4 / 3) * bitsPerValue));
    }
    this.#levels.push(level);
    this.#samples += mpeg1 ? 1152 : 576;
  }

  end(): Waveform {
    if (this.#levels.length === 0 || this.#sampleRate === 0) {
      throw new WaveformError('no MPEG Layer III frame found');
    }
    return {
      durationS: Math.round((this.#samples / this.#sampleRate) * 1000) / 1000,
      peaks: this.#levels.peaks(MAX_POINTS, MP3_RANGE_OCTAVES),
    };
  }
}

/**
 * MP3 levels are drawn on a logarithmic scale over this many octaves (about 60 dB): the estimate is a
 * power of two of side-information fields, far too spread out for a linear scale.
 */
const MP3_RANGE_OCTAVES = 10;
/**
 * Bits per spectral value counted at most: a granule whose bits went to the count1 region (few big values)
 * would otherwise read as far louder than it is.
 */
const MAX_BITS_PER_VALUE = 4;

/** `n` bits (at most 24) of `buf` starting at bit `bit`, most significant first. */
function readBits(buf: Buffer, bit: number, n: number): number {
  const byte = bit >>> 3;
  const word =
    ((buf[byte] ?? 0) << 24) |
    ((buf[byte + 1] ?? 0) << 16) |
    ((buf[byte + 2] ?? 0) << 8) |
    (buf[byte + 3] ?? 0);
  return ((word << (bit & 7)) >>> (32 - n)) & ((1 << n) - 1);
}

/** A RIFF WAVE file of integer PCM; the exact peak of each block of sample frames. */
class WavLevels {
  readonly #levels = new Levels();
  #header = Buffer.alloc(0);
  /** Set once the `data` chunk starts. */
  #format: { channels: number; bytes: number; sampleRate: number } | undefined;
  #dataLeft = 0;
  #carry = Buffer.alloc(0);
  #frames = 0;
  #blockMax = 0;
  #blockFrames = 0;

  push(chunk: Uint8Array): void {
    if (this.#format === undefined) {
      this.#header = Buffer.concat([this.#header, chunk]);
      const rest = this.#parseHeader();
      if (rest === undefined) {
        if (this.#header.length > MAX_WAV_HEADER_BYTES) throw new WaveformError('no WAV data chunk');
        return;
      }
      this.#header = Buffer.alloc(0);
      chunk = rest;
    }
    const format = this.#format!;
    const take = Math.min(chunk.length, this.#dataLeft);
    this.#dataLeft -= take;
    let buf =
      this.#carry.length === 0
        ? Buffer.from(chunk.subarray(0, take))
        : Buffer.concat([this.#carry, chunk.subarray(0, take)]);
    const frameBytes = format.channels * format.bytes;
    const whole = buf.length - (buf.length % frameBytes);
    for (let pos = 0; pos < whole; pos += frameBytes) {
      let max = 0;
      for (let c = 0; c < format.channels; c++)
        max = Math.max(max, sampleAt(buf, pos + c * format.bytes, format.bytes));
      this.#blockMax = Math.max(this.#blockMax, max);
      if (++this.#blockFrames === WAV_BLOCK_FRAMES) this.#flush();
    }
    this.#frames += whole / frameBytes;
    buf = buf.subarray(whole);
    this.#carry = Buffer.from(buf);
  }

  #flush(): void {
    this.#levels.push(this.#blockMax);
    this.#blockMax = 0;
    this.#blockFrames = 0;
  }

  /** Reads the chunks before `data`; the bytes after its header, or `undefined` until it is complete. */
  #parseHeader(): Buffer | undefined {
    const h = this.#header;
    if (h.length < 12) return undefined;
    if (h.toString('latin1', 8, 12) !== 'WAVE') throw new WaveformError('a RIFF file that is not WAVE');
    let pos = 12;
    let fmt: { channels: number; bytes: number; sampleRate: number } | undefined;
    while (h.length - pos >= 8) {
      const id = h.toString('latin1', pos, pos + 4);
      const size = h.readUInt32LE(pos + 4);
      if (id === 'data') {
        if (fmt === undefined) throw new WaveformError('a WAV data chunk before its fmt chunk');
        this.#format = fmt;
        this.#dataLeft = size;
        return h.subarray(pos + 8);
      }
      if (h.length - pos < 8 + size) return undefined;
      if (id === 'fmt ') fmt = parseFmt(h.subarray(pos + 8, pos + 8 + size));
      // Chunks are padded to an even size.
      pos += 8 + size + (size & 1);
    }
    return undefined;
  }

  end(): Waveform {
    if (this.#format === undefined) throw new WaveformError('no WAV data chunk');
    if (this.#blockFrames > 0) this.#flush();
    if (this.#frames === 0) throw new WaveformError('a WAV file without samples');
    return {
      durationS: Math.round((this.#frames / this.#format.sampleRate) * 1000) / 1000,
      peaks: this.#levels.peaks(MAX_POINTS),
    };
  }
}

function parseFmt(fmt: Buffer): { channels: number; bytes: number; sampleRate: number } {
  if (fmt.length < 16) throw new WaveformError('a short WAV fmt chunk');
  const tag = fmt.readUInt16LE(0);
  const channels = fmt.readUInt16LE(2);
  const sampleRate = fmt.readUInt32LE(4);
  const bits = fmt.readUInt16LE(14);
  // 1 = integer PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE, whose sub-format GUID starts with the same tag.
  const pcm = tag === 1 || (tag === 0xfffe && fmt.length >= 26 && fmt.readUInt16LE(24) === 1);
  if (!pcm || ![8, 16, 24, 32].includes(bits) || channels < 1 || sampleRate < 1) {
    throw new WaveformError(`an unsupported WAV format (tag ${tag}, ${bits} bits, ${channels} channels)`);
  }
  return { channels, bytes: bits / 8, sampleRate };
}

/** The magnitude of one sample, 0..1. */
function sampleAt(buf: Buffer, pos: number, bytes: number): number {
  switch (bytes) {
    case 1:
      return Math.abs(buf[pos]! - 128) / 128;
    case 2:
      return Math.abs(buf.readInt16LE(pos)) / 32768;
    case 3:
      return Math.abs(buf.readIntLE(pos, 3)) / 8388608;
    default:
      return Math.abs(buf.readInt32LE(pos)) / 2147483648;
  }
}
