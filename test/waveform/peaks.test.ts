/** The peak meter: exact peaks of PCM WAV and of decoded MP3, what it refuses, and that it frees its decoder. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Mp3Encoder } from '@breezystack/lamejs';
import { MPEGDecoder } from 'mpg123-decoder';
import { generateMp3, MP3_SAMPLE_RATE, MP3_SAMPLES_PER_FRAME } from '../../src/emulator/audio.js';
import {
  BLOCK_FRAMES,
  MAX_POINTS,
  type MeasureOptions,
  measurePeaks,
  resample,
  WaveformError,
} from '../../src/waveform/peaks.js';

/** Measures `data` fed in chunks of `chunk` bytes, as a read stream would. */
async function measure(data: Buffer, chunk: number, options?: MeasureOptions) {
  async function* chunks() {
    for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
  }
  return measurePeaks(chunks(), options);
}

/**
 * What the meter should answer for an MP3, worked out independently: the whole file decoded at once, the
 * largest absolute sample over both channels of each block of the first `frames` sample frames, scaled
 * linearly to 255 (fewer than MAX_POINTS blocks, so no pooling).
 */
async function expectedPeaks(data: Buffer, frames = Number.POSITIVE_INFINITY): Promise<number[]> {
  const decoder = new MPEGDecoder();
  await decoder.ready;
  try {
    const { channelData, samplesDecoded } = decoder.decode(data);
    const n = Math.min(samplesDecoded, frames);
    const blocks: number[] = [];
    for (let i = 0; i < n; i++) {
      const b = Math.floor(i / BLOCK_FRAMES);
      for (const channel of channelData) blocks[b] = Math.max(blocks[b] ?? 0, Math.abs(channel[i]!));
    }
    assert.ok(blocks.length <= MAX_POINTS);
    const max = Math.max(...blocks);
    return blocks.map((v) => Math.round((v / max) * 255));
  } finally {
    decoder.free();
  }
}

/** A 16 kHz mono MP3 (lamejs, as the emulator encodes) of `seconds` of silence and 440 Hz tones of `level(t)`. */
function toneMp3(seconds: number, level: (t: number) => number): Buffer {
  const pcm = new Int16Array(seconds * MP3_SAMPLE_RATE);
  for (let i = 0; i < pcm.length; i++) {
    const t = i / MP3_SAMPLE_RATE;
    pcm[i] = Math.round(level(t) * 32000 * Math.sin(2 * Math.PI * 440 * t));
  }
  const encoder = new Mp3Encoder(1, MP3_SAMPLE_RATE, 32);
  const parts: Buffer[] = [];
  for (let i = 0; i < pcm.length; i += 1152)
    parts.push(Buffer.from(encoder.encodeBuffer(pcm.subarray(i, i + 1152))));
  parts.push(Buffer.from(encoder.flush()));
  return Buffer.concat(parts);
}

/** Decoders made through it, and how many of them were freed. */
function countingDecoders(): { options: MeasureOptions; made: number; freed: number } {
  const counts = {
    made: 0,
    freed: 0,
    options: {
      createDecoder: () => {
        const decoder = new MPEGDecoder();
        counts.made++;
        return {
          ready: decoder.ready,
          decode: decoder.decode,
          free: () => {
            counts.freed++;
            decoder.free();
          },
        };
      },
    },
  };
  return counts;
}

/** A 16-bit stereo WAV at 8 kHz whose frames `channels(i)` gives, with a LIST chunk before the data. */
function wav(frames: number, sample: (frame: number, channel: number) => number, bits = 16, tag = 1): Buffer {
  const list = Buffer.from('LIST\x05\x00\x00\x00INFOx\x00', 'latin1');
  const bytes = bits / 8;
  const data = Buffer.alloc(frames * 2 * bytes);
  for (let f = 0; f < frames; f++) {
    for (let c = 0; c < 2; c++) if (bits === 16) data.writeInt16LE(sample(f, c), (f * 2 + c) * 2);
  }
  const fmt = Buffer.alloc(24);
  fmt.write('fmt ', 0, 'latin1');
  fmt.writeUInt32LE(16, 4);
  fmt.writeUInt16LE(tag, 8);
  fmt.writeUInt16LE(2, 10);
  fmt.writeUInt32LE(8000, 12);
  fmt.writeUInt32LE(8000 * 2 * bytes, 16);
  fmt.writeUInt16LE(2 * bytes, 20);
  fmt.writeUInt16LE(bits, 22);
  const head = Buffer.alloc(12);
  head.write('RIFF', 0, 'latin1');
  head.writeUInt32LE(4 + fmt.length + list.length + 8 + data.length, 4);
  head.write('WAVE', 8, 'latin1');
  const dataHead = Buffer.alloc(8);
  dataHead.write('data', 0, 'latin1');
  dataHead.writeUInt32LE(data.length, 4);
  return Buffer.concat([head, fmt, list, dataHead, data]);
}

describe('measurePeaks', () => {
  it('WAV: the exact peak of each block over all channels, scaled to the loudest, however the bytes arrive', async () => {
    // 0.5 s of a half-scale square on the left, 0.5 s of silence, 0.5 s of full scale on the right.
    const half = 4000;
    const file = wav(3 * half, (f, c) => {
      if (f < half) return c === 0 ? (f % 2 === 0 ? 16384 : -16384) : 0;
      if (f < 2 * half) return 0;
      return c === 1 ? -32768 : 100;
    });
    const whole = await measure(file, file.length);
    assert.equal(whole.durationS, 1.5);
    const blocks = Math.ceil((3 * half) / BLOCK_FRAMES);
    assert.equal(whole.peaks.length, blocks);
    const first = Math.floor(half / BLOCK_FRAMES);
    assert.deepEqual(new Set(whole.peaks.slice(0, first)), new Set([128]));
    assert.deepEqual(new Set(whole.peaks.slice(first + 1, 2 * first)), new Set([0]));
    assert.deepEqual(new Set(whole.peaks.slice(2 * first + 2)), new Set([255]));
    for (const chunk of [1, 7, 4093])
      assert.deepEqual(await measure(file, chunk), whole, `chunks of ${chunk}`);
  });

  it('MP3: the exact peaks of the decoded audio over both channels, however the bytes arrive', async () => {
    for (const channels of [1, 2] as const) {
      // Short: generating the emulator's audio (lamejs) costs far more than measuring it.
      const mp3 = generateMp3({ seed: 'REpeaks', durationS: 2, channels });
      const whole = await measure(mp3.data, mp3.data.length);
      assert.equal(whole.durationS, Math.round(mp3.durationS * 1000) / 1000);
      assert.equal(whole.peaks.length, Math.ceil((mp3.frames * MP3_SAMPLES_PER_FRAME) / BLOCK_FRAMES));
      assert.deepEqual(whole.peaks, await expectedPeaks(mp3.data), `channels ${channels}`);
      // Every utterance opens with a quarter second of digital silence.
      const silent = Math.floor((0.25 * MP3_SAMPLE_RATE) / BLOCK_FRAMES);
      assert.deepEqual(new Set(whole.peaks.slice(0, silent)), new Set([0]));
      for (const chunk of [143, 5000])
        assert.deepEqual(await measure(mp3.data, chunk), whole, `chunks of ${chunk}`);
    }
  });

  it('MP3: silence is 0, the loudest tone 255 where it plays, a tone at half its level about 128', async () => {
    // Half level from 0.5 s to 0.75 s, full level from 1.25 s to 1.5 s, silence around them.
    const mp3 = toneMp3(2, (t) => (t >= 0.5 && t < 0.75 ? 0.5 : t >= 1.25 && t < 1.5 ? 1 : 0));
    const { peaks, durationS } = await measure(mp3, 1000);
    const at = (from: number, to: number) =>
      peaks.slice(
        Math.floor((from * MP3_SAMPLE_RATE) / BLOCK_FRAMES),
        Math.floor((to * MP3_SAMPLE_RATE) / BLOCK_FRAMES),
      );
    // The encoder delays the audio by about 70 ms and pads its end; its transform smears each edge a little.
    assert.ok(durationS >= 2 && durationS < 2.2, `duration ${durationS}`);
    assert.deepEqual(new Set(at(0, 0.45)), new Set([0]), 'silence before the tones');
    assert.deepEqual(new Set(at(1.0, 1.2)), new Set([0]), 'silence between them');
    assert.deepEqual(new Set(at(1.8, durationS)), new Set([0]), 'silence after them');
    const loudest = peaks.indexOf(255);
    assert.ok(loudest >= at(0, 1.25).length && loudest < at(0, 1.65).length, `255 at block ${loudest}`);
    for (const p of at(1.35, 1.5)) assert.ok(p > 230, `full tone ${p}`);
    for (const p of at(0.6, 0.75)) assert.ok(p > 110 && p < 145, `half tone ${p}`);
  });

  it('MP3: a file cut short gives the peaks of what could be decoded', async () => {
    const mp3 = generateMp3({ seed: 'REpeaks', durationS: 2 });
    // 30 whole frames and part of the 31st.
    const cut = mp3.data.subarray(0, mp3.tagBytes + 30 * 144 + 70);
    const waveform = await measure(cut, 512);
    assert.equal(
      waveform.durationS,
      Math.round(((30 * MP3_SAMPLES_PER_FRAME) / MP3_SAMPLE_RATE) * 1000) / 1000,
    );
    assert.deepEqual(waveform.peaks, await expectedPeaks(mp3.data, 30 * MP3_SAMPLES_PER_FRAME));
  });

  it('pools a long recording into at most MAX_POINTS peaks', async () => {
    // Ten copies of 2 s of frames: 20 s, more than MAX_POINTS blocks.
    const mp3 = generateMp3({ seed: 'REpeaks', durationS: 2 });
    const frames = mp3.data.subarray(mp3.tagBytes);
    const long = Buffer.concat([mp3.data, ...Array.from({ length: 9 }, () => frames)]);
    const waveform = await measure(long, 65536);
    assert.equal(waveform.peaks.length, MAX_POINTS);
    assert.equal(waveform.durationS, Math.round(mp3.durationS * 10 * 1000) / 1000);
    assert.equal(Math.max(...waveform.peaks), 255);
  });

  it('keeps at most maxBlocks block peaks, merging neighbours into longer blocks when more would be needed', async () => {
    // 40 s of 8 kHz: 5,000 blocks of 64 frames. Ten seconds each at half scale, full scale, silence, quarter.
    const section = 80_000;
    const levels = [16384, 32767, 0, 8192];
    const file = wav(4 * section, (f) => (f % 2 === 0 ? 1 : -1) * levels[Math.floor(f / section)]!);
    const expected = [128, 255, 0, 64];
    for (const maxBlocks of [undefined, 2 * MAX_POINTS]) {
      const { peaks, durationS } = await measure(file, 65536, { maxBlocks });
      assert.equal(durationS, 40);
      assert.equal(peaks.length, MAX_POINTS);
      const per = MAX_POINTS / 4;
      for (let i = 0; i < 4; i++) {
        // Away from the edges, where a block may straddle two sections.
        const inside = peaks.slice(i * per + 2, (i + 1) * per - 2);
        assert.deepEqual(new Set(inside), new Set([expected[i]]), `section ${i}, maxBlocks ${maxBlocks}`);
      }
    }
    // One loud sample at frame 300, in block 4 of 64 frames (of 5,000: peak 1 of 2,000 covers blocks 2 to 4)
    // or, merged, in block 2 of 128 frames (of 2,500: peak 2 covers block 2 alone).
    const click = wav(4 * section, (f) => (f === 300 ? 30000 : 0));
    for (const [maxBlocks, at] of [
      [undefined, 1],
      [2 * MAX_POINTS, 2],
    ] as const) {
      const { peaks } = await measure(click, 65536, { maxBlocks });
      assert.equal(peaks.indexOf(255), at, `maxBlocks ${maxBlocks}`);
      assert.equal(peaks.filter((p) => p > 0).length, 1);
    }
    for (const maxBlocks of [2 * MAX_POINTS - 2, 2 * MAX_POINTS + 1, 1.5e4 + 0.5]) {
      await assert.rejects(measure(file, 65536, { maxBlocks }), RangeError, String(maxBlocks));
    }
  });

  it('refuses what it cannot measure with a WaveformError', async () => {
    const mp3 = generateMp3({ seed: 'REpeaks', durationS: 1 });
    const random = Buffer.alloc(4096);
    for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24;
    const cases: Array<[string, Buffer]> = [
      ['empty', Buffer.alloc(0)],
      ['HTML', Buffer.from('<!doctype html><html><body>Not found</body></html>')],
      ['binary garbage', random],
      ['MP3 cut inside its first frame', mp3.data.subarray(0, mp3.tagBytes + 100)],
      ['float WAV', wav(100, () => 0, 16, 3)],
      ['WAV without data', wav(10, () => 0).subarray(0, 36)],
      ['RIFF that is not WAVE', Buffer.from('RIFF\x04\x00\x00\x00AVI LIST', 'latin1')],
    ];
    for (const [what, data] of cases) await assert.rejects(measure(data, 16), WaveformError, what);
  });

  it('frees its decoder every time: audio, silence, or its bytes failing mid-way', async () => {
    const counts = countingDecoders();
    const mp3 = generateMp3({ seed: 'REpeaks', durationS: 1 });
    for (let i = 0; i < 20; i++) await measure(mp3.data, 4096, counts.options);
    // Frame headers and zeros: frames without spectral data, decoded as digital silence.
    const headers = Buffer.alloc(4 * 144);
    for (let f = 0; f < 4; f++) headers.set(mp3.data.subarray(mp3.tagBytes, mp3.tagBytes + 4), f * 144);
    const silence = await measure(headers, 4096, counts.options);
    assert.equal(silence.durationS, (4 * MP3_SAMPLES_PER_FRAME) / MP3_SAMPLE_RATE);
    assert.deepEqual(new Set(silence.peaks), new Set([0]));
    async function* failing() {
      yield mp3.data.subarray(0, 2000);
      throw new Error('the read stream failed');
    }
    await assert.rejects(measurePeaks(failing(), counts.options), /the read stream failed/);
    assert.equal(counts.made, 22);
    assert.equal(counts.freed, counts.made);
  });
});

describe('resample', () => {
  it('keeps the largest peak of each slice, and never adds points', () => {
    assert.deepEqual(resample([1, 5, 2, 8, 3], 2), [5, 8]);
    assert.deepEqual(resample([1, 5, 2], 10), [1, 5, 2]);
    assert.deepEqual(resample([0, 255, 0, 0], 4), [0, 255, 0, 0]);
    assert.throws(() => resample([1], 0), RangeError);
  });
});
