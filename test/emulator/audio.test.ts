import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateMp3, generateWav, minMp3Bytes, WAV_SAMPLE_RATE } from '../../src/emulator/audio.js';
import { sha256 } from '../helpers/common.js';
import { walkMp3 } from './mp3-frames.js';

describe('generateMp3', () => {
  it('produces exactly the requested byte count, all valid frames, with the stated sha256', () => {
    for (const bytes of [minMp3Bytes('REseed'), 1000, 4_001, 65_537, 400_000, 1_234_567]) {
      const mp3 = generateMp3({ seed: 'REseed', bytes });
      assert.equal(mp3.data.length, bytes);
      assert.equal(mp3.sha256, sha256(mp3.data));
      const walk = walkMp3(mp3.data);
      assert.equal(walk.tagBytes, mp3.tagBytes);
      assert.equal(walk.frames, mp3.frames);
      assert.equal(walk.sampleRate, 16_000);
      assert.equal(walk.bitrateKbps, 32);
      assert.equal(walk.channelMode, 3, 'mono');
      assert.equal(walk.firstMainDataBegin, 0);
      assert.ok(mp3.tagBytes < minMp3Bytes('REseed'));
    }
  });

  it('sizes by duration at 4000 bytes per second', () => {
    const mp3 = generateMp3({ seed: 'REduration', durationS: 60 });
    assert.ok(Math.abs(mp3.durationS - 60) < 0.04);
    assert.ok(Math.abs(mp3.data.length - 240_000) < 500);
    assert.equal(walkMp3(mp3.data).frames, mp3.frames);
  });

  it('is deterministic per seed and differs between seeds', () => {
    const a = generateMp3({ seed: 'REa', bytes: 100_000 });
    const b = generateMp3({ seed: 'REa', bytes: 100_000 });
    const c = generateMp3({ seed: 'REb', bytes: 100_000 });
    assert.equal(a.sha256, b.sha256);
    assert.notEqual(a.sha256, c.sha256);
  });

  it('generates 50 MB quickly and validly', () => {
    generateMp3({ seed: 'warm-up', durationS: 60 });
    const started = performance.now();
    const mp3 = generateMp3({ seed: 'REbig', bytes: 50_000_000 });
    const elapsed = performance.now() - started;
    assert.equal(mp3.data.length, 50_000_000);
    assert.ok(elapsed < 5_000, `took ${elapsed} ms`);
    assert.equal(walkMp3(mp3.data).frames, mp3.frames);
  });

  it('rejects bad options, naming the field', () => {
    assert.throws(() => generateMp3({ seed: 'x', bytes: 10 }), /options\.bytes/);
    assert.throws(() => generateMp3({ seed: 'x', durationS: -1 }), /options\.durationS/);
    assert.throws(() => generateMp3({ seed: '' }), /options\.seed/);
  });
});

describe('generateWav', () => {
  it('writes a valid 8 kHz 16-bit mono PCM RIFF header', () => {
    const wav = generateWav({ seed: 'REwav', durationS: 3 });
    const d = wav.data;
    assert.equal(d.toString('latin1', 0, 4), 'RIFF');
    assert.equal(d.readUInt32LE(4), d.length - 8);
    assert.equal(d.toString('latin1', 8, 12), 'WAVE');
    assert.equal(d.toString('latin1', 12, 16), 'fmt ');
    assert.equal(d.readUInt32LE(16), 16);
    assert.equal(d.readUInt16LE(20), 1, 'PCM');
    assert.equal(d.readUInt16LE(22), 1, 'mono');
    assert.equal(d.readUInt32LE(24), WAV_SAMPLE_RATE);
    assert.equal(d.readUInt32LE(28), WAV_SAMPLE_RATE * 2);
    assert.equal(d.readUInt16LE(32), 2);
    assert.equal(d.readUInt16LE(34), 16);
    assert.equal(d.toString('latin1', 36, 40), 'data');
    assert.equal(d.readUInt32LE(40), 3 * WAV_SAMPLE_RATE * 2);
    assert.equal(d.length, 44 + 3 * WAV_SAMPLE_RATE * 2);
    assert.equal(wav.sha256, sha256(d));
  });

  it('sounds like speech: syllables and pauses, varying pitch, neither silence nor a steady tone', () => {
    const wav = generateWav({ seed: 'REspeech', durationS: 20 });
    const samples = new Int16Array(wav.data.buffer, wav.data.byteOffset + 44, (wav.data.length - 44) / 2);
    const window = WAV_SAMPLE_RATE / 20;
    const rms: number[] = [];
    const crossings: number[] = [];
    for (let i = 0; i + window <= samples.length; i += window) {
      let sum = 0;
      let zc = 0;
      for (let j = i; j < i + window; j++) {
        sum += samples[j]! ** 2;
        if (j > i && samples[j]! >= 0 !== samples[j - 1]! >= 0) zc++;
      }
      rms.push(Math.sqrt(sum / window));
      crossings.push(zc);
    }
    const peak = Math.max(...rms);
    assert.ok(peak > 3000, `peak RMS ${peak}`);
    const quiet = rms.filter((r) => r < peak * 0.05).length / rms.length;
    assert.ok(quiet > 0.05 && quiet < 0.7, `quiet fraction ${quiet}`);
    const loud = rms.map((r, i) => ({ r, zc: crossings[i]! })).filter((w) => w.r > peak * 0.3);
    const mean = loud.reduce((a, w) => a + w.r, 0) / loud.length;
    const sd = Math.sqrt(loud.reduce((a, w) => a + (w.r - mean) ** 2, 0) / loud.length);
    assert.ok(sd / mean > 0.15, 'loudness varies between syllables');
    const zcs = new Set(loud.map((w) => Math.round(w.zc / 5)));
    assert.ok(zcs.size > 3, 'spectral content varies between syllables');
  });
});
