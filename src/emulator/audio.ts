/**
 * Deterministic, speech-like test audio for the emulator: real MP3 (MPEG-2 Layer III, 16 kHz mono, 32 kbps
 * CBR, 144-byte frames, 36 ms each, 4,000 bytes per second of audio) and real WAV (8 kHz 16-bit mono PCM,
 * as Twilio stores recordings).
 *
 * The voice is synthesized, not recorded: a glottal pulse train with a pitch contour, shaped by three
 * formant resonators that glide between vowels, with noise bursts for consonants and syllable and phrase
 * envelopes. A handful of short "utterances" are encoded once per process with lamejs, then tiled in a
 * seed-chosen order to any length, so a 50 MB file costs a memory copy and a hash rather than an encode.
 * Tiling stays decodable: the first frame of every encoded utterance has `main_data_begin = 0`, so no frame
 * reaches back across a tile boundary into the previous tile's bit reservoir.
 *
 * A dual-channel recording (`channels: 2`) puts one speaker on each channel, as Twilio's dual-channel files
 * put each call leg on its own: the same utterance order on the left, and on the right the utterances of a
 * second, seed-derived order, quieter (in the MP3, tiles of 2.25 s of each utterance). Its MP3 is joint-stereo at the same bit rate, so its frames and its
 * size are those of the mono file; its WAV is 16-bit stereo.
 *
 * An MP3 starts with an ID3v2.3 tag (title names the seed) whose zero padding makes the file exactly the
 * requested byte count; the rest is whole frames.
 */
import { createHash } from 'node:crypto';
import { Mp3Encoder } from '@breezystack/lamejs';

/** Sample rate the MP3 is encoded at. */
export const MP3_SAMPLE_RATE = 16_000;
/** Constant bit rate of the MP3, in kbit/s. */
export const MP3_BITRATE_KBPS = 32;
/** Bytes of one MPEG-2 Layer III frame at 32 kbps and 16 kHz (no padding slot is ever needed). */
export const MP3_FRAME_BYTES = 144;
/** PCM samples one MPEG-2 Layer III frame carries. */
export const MP3_SAMPLES_PER_FRAME = 576;
/** Sample rate of generated WAV files. */
export const WAV_SAMPLE_RATE = 8_000;

const VARIANTS = 6;
const ID3_HEADER_BYTES = 10;
const ID3_FRAME_HEADER_BYTES = 10;

export interface Mp3Options {
  /** Any string; the same seed always yields the same bytes. A recording SID is a good seed. */
  seed: string;
  /** Exact size of the file in bytes (at least {@link minMp3Bytes} for the seed). Wins over `durationS`. */
  bytes?: number;
  /** Approximate length of the audio in seconds, rounded to whole 36 ms frames. Default 30. */
  durationS?: number;
  /** 2 for a dual-channel (stereo) file of the same size. Default 1. */
  channels?: 1 | 2;
}

export interface GeneratedMp3 {
  data: Buffer;
  /** Lower-case hex SHA-256 of `data`. */
  sha256: string;
  /** Exact audio length: frames × 36 ms. */
  durationS: number;
  /** MPEG frames after the ID3 tag. */
  frames: number;
  /** Bytes of the leading ID3v2 tag, padding included. */
  tagBytes: number;
}

export interface WavOptions {
  seed: string;
  /** Length of the audio in seconds. Default 30. */
  durationS?: number;
  /** 2 for a dual-channel (stereo) file. Default 1. */
  channels?: 1 | 2;
}

export interface GeneratedWav {
  data: Buffer;
  sha256: string;
  durationS: number;
}

/** Mono utterances as whole MPEG frames, the first with main_data_begin = 0. */
const utterances = new Map<number, Buffer>();
/** Stereo utterances: voice `i` on the left, the other speaker on the right; MP3 frames only. */
const stereoUtterances = new Map<number, Buffer>();

/** Smallest byte count {@link generateMp3} accepts for this seed: the ID3 tag plus one frame. */
export function minMp3Bytes(seed: string): number {
  return id3TagMinBytes(seed) + MP3_FRAME_BYTES;
}

/** Generates a decodable MP3 of exactly `bytes` bytes, or of about `durationS` seconds. */
export function generateMp3(options: Mp3Options): GeneratedMp3 {
  const { seed } = options;
  if (typeof seed !== 'string' || seed.length === 0)
    throw new TypeError('options.seed must be a non-empty string');
  const minTag = id3TagMinBytes(seed);
  let frames: number;
  let total: number;
  if (options.bytes !== undefined) {
    const min = minTag + MP3_FRAME_BYTES;
    if (!Number.isSafeInteger(options.bytes) || options.bytes < min) {
      throw new RangeError(`options.bytes must be an integer >= ${min}`);
    }
    frames = Math.floor((options.bytes - minTag) / MP3_FRAME_BYTES);
    total = options.bytes;
  } else {
    const durationS = options.durationS ?? 30;
    if (!Number.isFinite(durationS) || durationS <= 0) {
      throw new RangeError('options.durationS must be a positive number');
    }
    frames = Math.max(1, Math.round((durationS * MP3_SAMPLE_RATE) / MP3_SAMPLES_PER_FRAME));
    total = minTag + frames * MP3_FRAME_BYTES;
  }
  const tagBytes = total - frames * MP3_FRAME_BYTES;
  const data = Buffer.allocUnsafe(total);
  writeId3Tag(data, tagBytes, seed);
  let offset = tagBytes;
  const order = tileOrder(seed);
  const stereo = channelsOption(options.channels) === 2;
  while (offset < total) {
    const index = order.next();
    const piece = stereo ? stereoUtterance(index) : utterance(index);
    const n = Math.min(piece.length, total - offset);
    piece.copy(data, offset, 0, n);
    offset += n;
  }
  return {
    data,
    sha256: sha256(data),
    durationS: (frames * MP3_SAMPLES_PER_FRAME) / MP3_SAMPLE_RATE,
    frames,
    tagBytes,
  };
}

/**
 * Generates a 16-bit PCM WAV at 8 kHz, mono or (`channels: 2`) stereo; the same seed tiles the same
 * utterances as its MP3.
 */
export function generateWav(options: WavOptions): GeneratedWav {
  const durationS = options.durationS ?? 30;
  const channels = channelsOption(options.channels);
  if (typeof options.seed !== 'string' || options.seed.length === 0) {
    throw new TypeError('options.seed must be a non-empty string');
  }
  if (!Number.isFinite(durationS) || durationS <= 0) {
    throw new RangeError('options.durationS must be a positive number');
  }
  const samples = Math.max(1, Math.round(durationS * WAV_SAMPLE_RATE));
  const frameBytes = 2 * channels;
  const data = Buffer.alloc(44 + samples * frameBytes);
  data.write('RIFF', 0, 'latin1');
  data.writeUInt32LE(36 + samples * frameBytes, 4);
  data.write('WAVE', 8, 'latin1');
  data.write('fmt ', 12, 'latin1');
  data.writeUInt32LE(16, 16);
  data.writeUInt16LE(1, 20);
  data.writeUInt16LE(channels, 22);
  data.writeUInt32LE(WAV_SAMPLE_RATE, 24);
  data.writeUInt32LE(WAV_SAMPLE_RATE * frameBytes, 28);
  data.writeUInt16LE(frameBytes, 32);
  data.writeUInt16LE(16, 34);
  data.write('data', 36, 'latin1');
  data.writeUInt32LE(samples * frameBytes, 40);
  tileWavChannel(data, tileOrder(options.seed), samples, 0, frameBytes, 1);
  if (channels === 2)
    tileWavChannel(data, tileOrder(`${options.seed}:right`), samples, 2, frameBytes, RIGHT_GAIN);
  return { data, sha256: sha256(data), durationS: samples / WAV_SAMPLE_RATE };
}

/** Samples of one stereo tile: 2.25 s, whole 576-sample frames. */
const STEREO_TILE_SAMPLES = 576 * 62;

/** The right channel's speaker is quieter, so the two channels are told apart at a glance. */
const RIGHT_GAIN = 0.6;

/** Writes one channel of a WAV's PCM: utterances in `order`, halved to 8 kHz, scaled by `gain`. */
function tileWavChannel(
  data: Buffer,
  order: { next(): number },
  samples: number,
  offset: number,
  stride: number,
  gain: number,
): void {
  let written = 0;
  while (written < samples) {
    const pcm = speech(order.next());
    // Halving the rate by averaging pairs: the voice's energy sits well below 4 kHz.
    for (let i = 0; i + 1 < pcm.length && written < samples; i += 2) {
      data.writeInt16LE(Math.round(((pcm[i]! + pcm[i + 1]!) / 2) * gain), 44 + offset + written * stride);
      written++;
    }
  }
}

function channelsOption(channels: unknown): 1 | 2 {
  if (channels === undefined || channels === 1 || channels === 2) return channels ?? 1;
  throw new RangeError('options.channels must be 1 or 2');
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function id3Title(seed: string): Buffer {
  return Buffer.from(`recgate emulator ${seed}`.replace(/[^\x20-\x7e]/g, '?'), 'latin1');
}

function id3TagMinBytes(seed: string): number {
  return ID3_HEADER_BYTES + ID3_FRAME_HEADER_BYTES + 1 + id3Title(seed).length;
}

/** Writes an ID3v2.3 tag with one TIT2 frame and zero padding filling exactly `size` bytes. */
function writeId3Tag(target: Buffer, size: number, seed: string): void {
  const title = id3Title(seed);
  target.write('ID3', 0, 'latin1');
  target[3] = 3;
  target[4] = 0;
  target[5] = 0;
  const body = size - ID3_HEADER_BYTES;
  // The tag size is "syncsafe": four 7-bit groups, so no byte of it looks like an MPEG sync.
  target[6] = (body >>> 21) & 0x7f;
  target[7] = (body >>> 14) & 0x7f;
  target[8] = (body >>> 7) & 0x7f;
  target[9] = body & 0x7f;
  target.write('TIT2', 10, 'latin1');
  target.writeUInt32BE(title.length + 1, 14);
  target.writeUInt16BE(0, 18);
  target[20] = 0;
  title.copy(target, 21);
  target.fill(0, 21 + title.length, size);
}

/** An endless, seed-determined sequence of utterance indexes. */
function tileOrder(seed: string): { next(): number } {
  const random = prng(seed);
  let previous = -1;
  return {
    next() {
      let pick = Math.floor(random() * VARIANTS);
      if (pick === previous) pick = (pick + 1) % VARIANTS;
      previous = pick;
      return pick;
    },
  };
}

/** mulberry32 seeded from a SHA-256 of the seed string. */
function prng(seed: string): () => number {
  let state = createHash('sha256').update(seed).digest().readUInt32LE(0);
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function utterance(index: number): Buffer {
  let cached = utterances.get(index);
  if (!cached) {
    cached = encodeMp3(speech(index));
    utterances.set(index, cached);
  }
  return cached;
}

/** Utterance `index`'s 16 kHz PCM, synthesized once: WAVs and stereo files need no mono encode. */
function speech(index: number): Int16Array {
  let pcm = speeches.get(index);
  if (!pcm) {
    pcm = synthesizeSpeech(index);
    speeches.set(index, pcm);
  }
  return pcm;
}
const speeches = new Map<number, Int16Array>();

/**
 * Utterance `index` on the left channel and another voice's (the next index of the other pitch) on the
 * right at {@link RIGHT_GAIN}, cut or padded with silence to the left's length.
 */
function stereoUtterance(index: number): Buffer {
  let cached = stereoUtterances.get(index);
  if (!cached) {
    // A shorter tile than the mono one: lamejs encodes stereo slowly, and tiles only need to be many.
    const left = speech(index).subarray(0, STEREO_TILE_SAMPLES);
    const other = speech((index + 3) % VARIANTS);
    const right = new Int16Array(left.length);
    for (let i = 0; i < right.length && i < other.length; i++) right[i] = Math.round(other[i]! * RIGHT_GAIN);
    cached = encodeMp3(left, right);
    stereoUtterances.set(index, cached);
  }
  return cached;
}

function encodeMp3(pcm: Int16Array, right?: Int16Array): Buffer {
  const encoder = new Mp3Encoder(right === undefined ? 1 : 2, MP3_SAMPLE_RATE, MP3_BITRATE_KBPS);
  const parts: Buffer[] = [];
  const push = (chunk: Uint8Array) => {
    if (chunk.length > 0) parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  };
  for (let i = 0; i < pcm.length; i += 1152) {
    push(
      right === undefined
        ? encoder.encodeBuffer(pcm.subarray(i, i + 1152))
        : encoder.encodeBuffer(pcm.subarray(i, i + 1152), right.subarray(i, i + 1152)),
    );
  }
  push(encoder.flush());
  const mp3 = Buffer.concat(parts);
  if (mp3.length % MP3_FRAME_BYTES !== 0 || mp3.readUInt32BE(0) >>> 21 !== 0x7ff) {
    throw new Error('The MP3 encoder produced frames of an unexpected size');
  }
  return mp3;
}

/** Vowel formants (F1, F2, F3 in Hz) of an adult voice. */
const VOWELS: ReadonlyArray<readonly [number, number, number]> = [
  [730, 1090, 2440],
  [530, 1840, 2480],
  [270, 2290, 3010],
  [570, 840, 2410],
  [300, 870, 2240],
  [660, 1720, 2410],
  [490, 1350, 1690],
  [440, 1020, 2240],
];

/**
 * About 6 s of synthetic speech at 16 kHz: phrases of syllables separated by pauses, each syllable a
 * formant-filtered glottal buzz with a rising-falling pitch accent, some opened by a fricative burst.
 */
function synthesizeSpeech(variant: number): Int16Array {
  const fs = MP3_SAMPLE_RATE;
  const random = prng(`recgate-voice-${variant}`);
  const length = Math.round(fs * (5.5 + random()));
  const out = new Float32Array(length);
  const baseF0 = variant % 2 === 0 ? 105 + random() * 25 : 190 + random() * 35;
  const formantScale = variant % 2 === 0 ? 1 : 1.15;

  let t = Math.round(fs * 0.25);
  let phase = 0;
  let previousWhite = 0;
  const formantState = [0, 0, 0, 0, 0, 0];
  let vowel = VOWELS[Math.floor(random() * VOWELS.length)]!;
  while (t < length - fs * 0.4) {
    const syllables = 3 + Math.floor(random() * 6);
    const phraseStart = t;
    for (let s = 0; s < syllables && t < length - fs * 0.4; s++) {
      const syllableLength = Math.round(fs * (0.12 + random() * 0.2));
      const next = VOWELS[Math.floor(random() * VOWELS.length)]!;
      const from = vowel;
      vowel = next;
      const fricative = random() < 0.35 ? Math.round(fs * (0.04 + random() * 0.05)) : 0;
      const accent = 0.85 + random() * 0.35;
      const loudness = 0.55 + random() * 0.45;
      for (let i = 0; i < fricative && t + i < length; i++) {
        const white = random() * 2 - 1;
        // First-difference of the noise: a crude high-pass, hiss rather than rumble.
        const hiss = white - previousWhite;
        previousWhite = white;
        const env = Math.sin((Math.PI * i) / fricative);
        out[t + i] = out[t + i]! + 0.18 * loudness * env * hiss;
      }
      t += Math.round(fricative * 0.6);
      const formants = [0, 0, 0];
      for (let i = 0; i < syllableLength && t + i < length; i++) {
        const x = i / syllableLength;
        const declination = 1 - (0.18 * (t + i - phraseStart)) / (fs * 2.5);
        const f0 = baseF0 * Math.max(0.75, declination) * (1 + (accent - 1) * Math.sin(Math.PI * x));
        phase += f0 / fs;
        if (phase >= 1) phase -= 1;
        // Glottal pulse: fast closing edge, soft opening, plus a little breath.
        const pulse = phase < 0.6 ? Math.sin((Math.PI * phase) / 0.6) ** 2 : 0;
        const source = pulse - 0.3 + 0.03 * (random() * 2 - 1);
        const glide = Math.min(1, x * 3);
        for (let k = 0; k < 3; k++) formants[k] = (from[k]! + (next[k]! - from[k]!) * glide) * formantScale;
        let y = source;
        for (let k = 0; k < 3; k++) y = resonate(y, formants[k]!, 60 + 40 * k, formantState, k);
        const attack = Math.min(1, x / 0.12);
        const release = Math.min(1, (1 - x) / 0.25);
        out[t + i] = out[t + i]! + loudness * attack * release * y;
      }
      t += syllableLength + Math.round(fs * (0.02 + random() * 0.06));
    }
    t += Math.round(fs * (0.25 + random() * 0.45));
  }

  let peak = 0;
  for (let i = 0; i < length; i++) peak = Math.max(peak, Math.abs(out[i]!));
  const gain = peak > 0 ? (0.7 * 32767) / peak : 0;
  const pcm = new Int16Array(length);
  for (let i = 0; i < length; i++) pcm[i] = Math.round(out[i]! * gain);
  return pcm;
}

/** One Klatt two-pole resonator step; `state` holds y[n-1], y[n-2] for each of the three formants. */
function resonate(x: number, frequency: number, bandwidth: number, state: number[], k: number): number {
  const fs = MP3_SAMPLE_RATE;
  const c = -Math.exp((-2 * Math.PI * bandwidth) / fs);
  const b = 2 * Math.exp((-Math.PI * bandwidth) / fs) * Math.cos((2 * Math.PI * frequency) / fs);
  const a = 1 - b - c;
  const y = a * x + b * state[2 * k]! + c * state[2 * k + 1]!;
  state[2 * k + 1] = state[2 * k]!;
  state[2 * k] = y;
  return y;
}
