/** Waveforms over a recording cache: what it stores, which stored peaks it trusts, and its 422. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { generateMp3 } from '../../src/emulator/audio.js';
import type { CachedRecording, RecordingCache, RecordingRef } from '../../src/recordings/cache.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { Waveforms } from '../../src/waveform/waveforms.js';
import { isCode } from '../helpers/common.js';

const ref: RecordingRef = {
  ownerCallSid: `CA${'1'.repeat(32)}` as CallSid,
  recordingSid: `RE${'2'.repeat(32)}` as RecordingSid,
};

/** A cache holding `data` as the finished file of `ref`, with `stored` as its peaks file. */
function cacheOf(data: Buffer, stored?: string, keeps = true) {
  const written: string[] = [];
  let opened = 0;
  const recording: Partial<CachedRecording> = {
    size: data.length,
    createReadStream: (start, end) => Readable.from([data.subarray(start, end + 1)]),
  };
  const cache: Partial<RecordingCache> = {
    open: async () => {
      opened++;
      return recording as CachedRecording;
    },
    state: async () => ({ state: 'cached', size: data.length }),
    readPeaks: async () => stored,
    writePeaks: async (_ref, text) => {
      written.push(text);
      return keeps;
    },
  };
  return { cache: cache as RecordingCache, written, opened: () => opened };
}

describe('Waveforms', () => {
  it('measures a recording once, stores its peaks as version 2, and trusts only those', async () => {
    const mp3 = generateMp3({ seed: ref.recordingSid, durationS: 1 });
    const first = cacheOf(mp3.data);
    const waveform = await new Waveforms(first.cache).get(ref);
    assert.equal(waveform.durationS, Math.round(mp3.durationS * 1000) / 1000);
    assert.equal(first.written.length, 1);
    const stored = JSON.parse(first.written[0]!);
    assert.deepEqual(stored, {
      version: 2,
      recording_sid: ref.recordingSid,
      size: mp3.data.length,
      duration_s: waveform.durationS,
      peaks: waveform.peaks,
    });

    const current = cacheOf(mp3.data, JSON.stringify({ ...stored, peaks: [1, 2, 3] }));
    assert.deepEqual((await new Waveforms(current.cache).get(ref)).peaks, [1, 2, 3]);
    assert.equal(current.opened(), 0, 'stored peaks of this version are read, not computed');

    // Version 1 held levels estimated from the MP3 frames' side information: measured again.
    const old = cacheOf(mp3.data, JSON.stringify({ ...stored, version: 1, peaks: [1, 2, 3] }));
    assert.deepEqual(await new Waveforms(old.cache).get(ref), waveform);
    assert.equal(old.opened(), 1);
    assert.equal(JSON.parse(old.written[0]!).version, 2);
  });

  it('answers RECGATE_WAVEFORM_UNAVAILABLE (422) for bytes that are not audio, and stores nothing', async () => {
    const html = cacheOf(Buffer.from('<!doctype html><html><body>Service Unavailable</body></html>'));
    await assert.rejects(new Waveforms(html.cache).get(ref), (err: unknown) => {
      isCode('RECGATE_WAVEFORM_UNAVAILABLE')(err);
      assert.equal((err as { statusCode: number }).statusCode, 422);
      return true;
    });
    assert.deepEqual(html.written, []);
  });

  it('peaks the cache does not keep (a recording kept encrypted) are measured again for every request', async () => {
    const mp3 = generateMp3({ seed: ref.recordingSid, durationS: 1 });
    const encrypted = cacheOf(mp3.data, undefined, false);
    const waveforms = new Waveforms(encrypted.cache);
    const first = await waveforms.get(ref);
    assert.deepEqual(await waveforms.get(ref), first);
    assert.equal(encrypted.opened(), 2, 'each request opens the recording (and needs its key)');
  });
});
