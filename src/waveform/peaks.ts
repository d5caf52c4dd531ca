/**
 * A recording's waveform as a compact array of peaks, computed in one streaming pass over its bytes.
 *
 * Both formats give exact peaks: the largest absolute sample over all channels of each block of
 * {@link BLOCK_FRAMES} sample frames, of the audio itself.
 * - **WAV** (PCM, 8, 16, 24 or 32-bit integer, any channel count): the samples are read from the file.
 * - **MP3** (MPEG audio: Layer III as Twilio records it, Layers I and II too): decoded by `mpg123-decoder`
 *   (mpg123 compiled to WebAssembly), fed the bytes as they arrive; the decoder is freed when the pass
 *   ends, however it ends. Frames it cannot decode (a corrupt frame, a file cut short mid-frame) are
 *   skipped: the peaks are those of the audio it could decode.
 *
 * Which format the bytes are is decided by the download's {@link MediaSniffer}; anything else (an HTML
 * page, random bytes) is a {@link WaveformError}, as is audio without a single sample.
 *
 * Peaks are scaled linearly so that the loudest point of the recording is 255 (0 = silence), the usual way
 * a waveform is drawn: the shape matters, not the absolute level. Linear, not logarithmic: on speech a
 * linear scale shows the syllables and the pauses between them, where a decibel scale lifts breaths and
 * line noise to nearly the level of the voice.
 *
 * Memory: the format's parser or the decoder's WebAssembly instance, the chunks read until the format is
 * known (past the ID3v2 tags, which the sniffer bounds to 1 MiB), then one slice of {@link SLICE_BYTES}
 * of input at a time and its samples, and the block peaks, at most {@link MAX_BLOCKS} numbers (512 KiB)
 * whatever the recording's length. Between slices the pass yields to the event loop, so a long recording
 * is decoded in small steps.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MPEGDecoder } from 'mpg123-decoder';
import { MediaSniffer, type SniffResult } from '../recordings/media-check.js';

/** Peaks kept per recording, and the most a request may ask for. */
export const MAX_POINTS = 2000;
/**
 * Sample frames summarized by one value before the peaks are pooled (4 ms at 16 kHz, 8 ms at 8 kHz), or a
 * power of two times as many when more than `maxBlocks` blocks would be needed.
 */
export const BLOCK_FRAMES = 64;
/** Default of {@link MeasureOptions.maxBlocks}. */
export const MAX_BLOCKS = 131_072;
/** Most bytes handled between two turns of the event loop. */
export const SLICE_BYTES = 16 * 1024;
/** Most bytes of WAV chunks before the `data` chunk (a `LIST` tag, …) that the meter accepts. */
const MAX_WAV_HEADER_BYTES = 1024 * 1024;

export interface Waveform {
  /** The audio's length in seconds (to the millisecond). */
  durationS: number;
  /** At most {@link MAX_POINTS} integers 0..255, evenly spaced over the audio. */
  peaks: number[];
}

/** Why bytes could not be measured: not MP3 or integer PCM WAV, or no audio in them. */
export class WaveformError extends Error {
  override readonly name = 'WaveformError';
}

/** What the meter needs of an MPEG audio decoder: `mpg123-decoder`'s `MPEGDecoder`. */
export type Mp3Decoder = Pick<MPEGDecoder, 'ready' | 'decode' | 'free'>;

export interface MeasureOptions {
  /**
   * Most block peaks kept in memory (4 bytes each), an even number of at least twice {@link MAX_POINTS}.
   * A longer recording keeps longer blocks (see {@link BLOCK_FRAMES}).
   * @default 131072 ({@link MAX_BLOCKS}: 512 KiB; blocks of 64 frames up to 8.7 minutes at 16 kHz)
   */
  maxBlocks?: number;
  /**
   * Makes the decoder for an MP3; the meter frees it when it is done.
   * @default () => new MPEGDecoder()
   */
  createDecoder?: () => Mp3Decoder;
}

/**
 * The waveform of a recording whose bytes `chunks` yields in order (a file's read stream). Throws
 * {@link WaveformError} when they hold no audio it can measure, and whatever `chunks` throws.
 */
export async function measurePeaks(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: MeasureOptions = {},
): Promise<Waveform> {
  const maxBlocks = options.maxBlocks ?? MAX_BLOCKS;
  if (!Number.isSafeInteger(maxBlocks) || maxBlocks % 2 !== 0 || maxBlocks < 2 * MAX_POINTS) {
    throw new RangeError(`options.maxBlocks must be an even integer >= ${2 * MAX_POINTS}`);
  }
  const sniffer = new MediaSniffer();
  /** Chunks held until the sniffer names the format. */
  const held: Uint8Array[] = [];
  let feeder: Feeder | undefined;
  try {
    for await (const chunk of chunks) {
      if (feeder === undefined) {
        held.push(chunk);
        const format = sniffer.push(chunk);
        if (format.kind === 'need-more') continue;
        feeder = new Feeder(await open(format, maxBlocks, options));
        for (const part of held.splice(0)) await feeder.push(part);
      } else {
        await feeder.push(chunk);
      }
    }
    if (feeder === undefined) {
      feeder = new Feeder(await open(sniffer.end(), maxBlocks, options));
      for (const part of held.splice(0)) await feeder.push(part);
    }
    return feeder.meter.end();
  } finally {
    feeder?.meter.close();
  }
}

/** The meter for the format the sniffer found. */
async function open(
  format: SniffResult,
  maxBlocks: number,
  options: MeasureOptions,
): Promise<Mp3Levels | WavLevels> {
  if (format.kind !== 'ok') throw new WaveformError(format.kind === 'bad' ? format.reason : 'no audio');
  if (format.format === 'wav') return new WavLevels(maxBlocks);
  const decoder = (options.createDecoder ?? (() => new MPEGDecoder()))();
  // A decoder that never became ready holds nothing to free (and mpg123-decoder's `free` would throw).
  await decoder.ready;
  return new Mp3Levels(decoder, maxBlocks);
}

/**
 * Feeds a meter in slices of at most {@link SLICE_BYTES}, and lets the event loop run whenever that many
 * bytes went in since it last did (the chunks of a file's read stream may follow each other without one).
 */
class Feeder {
  readonly meter: Mp3Levels | WavLevels;
  #sinceTurn = 0;

  constructor(meter: Mp3Levels | WavLevels) {
    this.meter = meter;
  }

  async push(chunk: Uint8Array): Promise<void> {
    for (let i = 0; i < chunk.length; ) {
      const slice = chunk.subarray(i, i + SLICE_BYTES - this.#sinceTurn);
      this.meter.push(slice);
      i += slice.length;
      this.#sinceTurn += slice.length;
      if (this.#sinceTurn === SLICE_BYTES) {
        this.#sinceTurn = 0;
        await nextTurn();
      }
    }
  }
}

/**
 * Block peaks of a recording: fed the largest absolute sample of each sample frame, keeps the largest of
 * each block of {@link BLOCK_FRAMES} frames, in at most `maxBlocks` numbers: when they would not do, every
 * two neighbours are merged and blocks twice as long kept from then on.
 */
class Blocks {
  readonly #maxBlocks: number;
  #values: Float32Array;
  #length = 0;
  /** Sample frames per block: {@link BLOCK_FRAMES}, doubled at every merge. */
  #blockSize = BLOCK_FRAMES;
  #blockMax = 0;
  #blockFrames = 0;
  /** Sample frames fed so far. */
  frames = 0;

  constructor(maxBlocks: number) {
    this.#maxBlocks = maxBlocks;
    this.#values = new Float32Array(Math.min(4096, maxBlocks));
  }

  frame(max: number): void {
    if (max > this.#blockMax) this.#blockMax = max;
    this.frames++;
    if (++this.#blockFrames < this.#blockSize) return;
    // A full array: the block just ended becomes the first half of one twice as long.
    if (this.#length === this.#maxBlocks) this.#merge();
    else this.#push();
  }

  #push(): void {
    if (this.#length === this.#maxBlocks) this.#merge();
    if (this.#length === this.#values.length) {
      const next = new Float32Array(Math.min(this.#values.length * 2, this.#maxBlocks));
      next.set(this.#values);
      this.#values = next;
    }
    this.#values[this.#length++] = this.#blockMax;
    this.#blockMax = 0;
    this.#blockFrames = 0;
  }

  /** Halves the blocks kept by merging neighbours, and doubles the block size. */
  #merge(): void {
    const values = this.#values;
    const half = this.#length / 2;
    for (let i = 0; i < half; i++) values[i] = Math.max(values[2 * i]!, values[2 * i + 1]!);
    this.#length = half;
    this.#blockSize *= 2;
  }

  /** Pooled (maximum) into at most `points` buckets and scaled linearly so that the largest is 255. */
  peaks(points: number): number[] {
    if (this.#blockFrames > 0) this.#push();
    const pooled = pool(this.#values.subarray(0, this.#length), points);
    let max = 0;
    for (const v of pooled) max = Math.max(max, v);
    if (max === 0) return pooled.map(() => 0);
    return pooled.map((v) => Math.round((v / max) * 255));
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

/** MPEG audio, decoded; the exact peak of each block of decoded sample frames. */
class Mp3Levels {
  readonly #blocks: Blocks;
  readonly #decoder: Mp3Decoder;
  /** Seconds decoded, each output at the sampling rate the decoder reported for it. */
  #seconds = 0;

  constructor(decoder: Mp3Decoder, maxBlocks: number) {
    this.#decoder = decoder;
    this.#blocks = new Blocks(maxBlocks);
  }

  push(chunk: Uint8Array): void {
    const { channelData, samplesDecoded, sampleRate } = quietly(() => this.#decoder.decode(chunk));
    if (samplesDecoded === 0) return;
    this.#seconds += samplesDecoded / sampleRate;
    for (let i = 0; i < samplesDecoded; i++) {
      let max = 0;
      for (const channel of channelData) {
        const v = Math.abs(channel[i]!);
        if (v > max) max = v;
      }
      this.#blocks.frame(max);
    }
  }

  end(): Waveform {
    if (this.#blocks.frames === 0) throw new WaveformError('no MPEG audio frame could be decoded');
    return {
      durationS: Math.round(this.#seconds * 1000) / 1000,
      peaks: this.#blocks.peaks(MAX_POINTS),
    };
  }

  /** Frees the decoder; call once, when done. */
  close(): void {
    this.#decoder.free();
  }
}

/**
 * Runs `decode` with `console.error` silenced: mpg123-decoder prints every frame it cannot decode there
 * (it also returns them), which would bypass the gateway's log and flood it for a corrupt file. `decode` is
 * synchronous, so nothing else runs meanwhile.
 */
function quietly<T>(decode: () => T): T {
  const error = console.error;
  console.error = () => undefined;
  try {
    return decode();
  } finally {
    console.error = error;
  }
}

/** A RIFF WAVE file of integer PCM; the exact peak of each block of sample frames. */
class WavLevels {
  readonly #blocks: Blocks;
  #header = Buffer.alloc(0);
  /** Set once the `data` chunk starts. */
  #format: { channels: number; bytes: number; sampleRate: number } | undefined;
  #dataLeft = 0;
  #carry = Buffer.alloc(0);

  constructor(maxBlocks: number) {
    this.#blocks = new Blocks(maxBlocks);
  }

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
    // A view of the chunk (no copy) unless a frame split across chunks needs joining; only the remainder,
    // shorter than a frame, is copied out (the chunk may be reused once this returns).
    let buf =
      this.#carry.length === 0
        ? Buffer.from(chunk.buffer, chunk.byteOffset, take)
        : Buffer.concat([this.#carry, chunk.subarray(0, take)]);
    const frameBytes = format.channels * format.bytes;
    const whole = buf.length - (buf.length % frameBytes);
    for (let pos = 0; pos < whole; pos += frameBytes) {
      let max = 0;
      for (let c = 0; c < format.channels; c++)
        max = Math.max(max, sampleAt(buf, pos + c * format.bytes, format.bytes));
      this.#blocks.frame(max);
    }
    buf = buf.subarray(whole);
    this.#carry = Buffer.from(buf);
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
    if (this.#blocks.frames === 0) throw new WaveformError('a WAV file without samples');
    return {
      durationS: Math.round((this.#blocks.frames / this.#format.sampleRate) * 1000) / 1000,
      peaks: this.#blocks.peaks(MAX_POINTS),
    };
  }

  /** Nothing to free: the parser holds only buffers. */
  close(): void {}
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
