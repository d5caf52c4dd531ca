/** The peak meter: exact peaks of PCM WAV, the side-information envelope of MP3, and what it refuses. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateMp3 } from '../../src/emulator/audio.js';
import {
  MAX_POINTS,
  PeakMeter,
  resample,
  WAV_BLOCK_FRAMES,
  WaveformError,
} from '../../src/waveform/peaks.js';

function measure(data: Buffer, chunk: number) {
  const meter = new PeakMeter();
  for (let i = 0; i < data.length; i += chunk) meter.push(data.subarray(i, i + chunk));
  return meter.end();
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

describe('PeakMeter', () => {
  it('WAV: the exact peak of each block over all channels, scaled to the loudest, however the bytes arrive', () => {
    // 0.5 s of a half-scale square on the left, 0.5 s of silence, 0.5 s of full scale on the right.
    const half = 4000;
    const file = wav(3 * half, (f, c) => {
      if (f < half) return c === 0 ? (f % 2 === 0 ? 16384 : -16384) : 0;
      if (f < 2 * half) return 0;
      return c === 1 ? -32768 : 100;
    });
    const whole = measure(file, file.length);
    assert.equal(whole.durationS, 1.5);
    const blocks = Math.ceil((3 * half) / WAV_BLOCK_FRAMES);
    assert.equal(whole.peaks.length, blocks);
    const first = Math.floor(half / WAV_BLOCK_FRAMES);
    assert.deepEqual(new Set(whole.peaks.slice(0, first)), new Set([128]));
    assert.deepEqual(new Set(whole.peaks.slice(first + 1, 2 * first)), new Set([0]));
    assert.deepEqual(new Set(whole.peaks.slice(2 * first + 2)), new Set([255]));
    for (const chunk of [1, 7, 4093]) assert.deepEqual(measure(file, chunk), whole, `chunks of ${chunk}`);
  });

  it('MP3: one level per frame, silence is 0, the duration is the frames’, however the bytes arrive', () => {
    for (const channels of [1, 2] as const) {
      // Short: generating the emulator's audio (lamejs) costs far more than measuring it.
      const mp3 = generateMp3({ seed: 'REpeaks', durationS: 4, channels });
      const whole = measure(mp3.data, mp3.data.length);
      assert.equal(whole.durationS, Math.round(mp3.durationS * 1000) / 1000);
      assert.equal(whole.peaks.length, Math.min(mp3.frames, MAX_POINTS));
      assert.equal(Math.max(...whole.peaks), 255);
      // Every utterance opens with a quarter second of silence: frames that carry no spectral bits.
      assert.deepEqual(whole.peaks.slice(0, 5), [0, 0, 0, 0, 0], `channels ${channels}`);
      assert.ok(whole.peaks.filter((p) => p > 0).length > whole.peaks.length / 2, 'mostly speech');
      for (const chunk of [1, 143, 5000])
        assert.deepEqual(measure(mp3.data, chunk), whole, `chunks of ${chunk}`);
    }
  });

  it('pools a long recording into at most MAX_POINTS peaks', () => {
    // Twenty copies of 4 s of frames: 80 s, more than MAX_POINTS frames of 36 ms.
    const mp3 = generateMp3({ seed: 'REpeaks', durationS: 4 });
    const frames = mp3.data.subarray(mp3.tagBytes);
    const long = Buffer.concat([mp3.data, ...Array.from({ length: 19 }, () => frames)]);
    const waveform = measure(long, 65536);
    assert.equal(waveform.peaks.length, MAX_POINTS);
    assert.equal(waveform.durationS, Math.round(mp3.durationS * 20 * 1000) / 1000);
  });

  it('refuses what it cannot measure with a WaveformError', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty', Buffer.alloc(0)],
      ['HTML', Buffer.from('<!doctype html><html><body>Not found</body></html>')],
      ['float WAV', wav(100, () => 0, 16, 3)],
      ['WAV without data', wav(10, () => 0).subarray(0, 36)],
      ['RIFF that is not WAVE', Buffer.from('RIFF\x04\x00\x00\x00AVI LIST', 'latin1')],
    ];
    for (const [what, data] of cases) assert.throws(() => measure(data, 16), WaveformError, what);
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
