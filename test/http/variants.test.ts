/**
 * Channels and formats end to end (issue 15, item 4): `?channels=2` and `?format=wav` each download their
 * own rendition from the emulator exactly once, into a cache entry of its own beside `{callSid}.mp3`; a
 * mono recording asked for as dual is a 409; bad values are a 400; playback URLs bind the variant; purge
 * and eviction remove variants too.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { generateMp3, generateWav, MP3_SAMPLES_PER_FRAME } from '../../src/emulator/audio.js';
import type { CallSid } from '../../src/sid.js';
import { BLOCK_FRAMES } from '../../src/waveform/peaks.js';
import { sha256, until as untilWithin } from '../helpers/common.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

const SIZE = 8_000;

async function get(stack: Stack, url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await request(url.startsWith('http') ? url : `${stack.url}${url}`, {
    method: method as 'GET',
    headers,
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, bytes, json: () => JSON.parse(bytes.toString()) };
}

/** The recording files of a call (lock files and identity records aside), sorted. */
function stored(stack: Stack, callSid: string): string[] {
  return readdirSync(path.join(stack.dataDir, 'recordings'))
    .filter((n) => n.startsWith(callSid))
    .sort();
}

/** An operator's purge of the call's recording; then nothing of it is left. */
async function purge(stack: Stack, callSid: string): Promise<void> {
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const purged = await get(stack, `/api/admin/calls/${callSid}/recording`, admin, 'DELETE');
  assert.equal(purged.status, 200);
  assert.deepEqual(stored(stack, callSid), []);
}

const until = (what: string, ok: () => boolean | Promise<boolean>) => untilWithin(what, ok, 15_000);

describe('variants: channels and formats', () => {
  let stack: Stack;
  let auth: Record<string, string>;
  before(async () => {
    stack = await startStack();
    auth = { authorization: `Bearer ${await stack.token('acme')}` };
  });
  after(() => stack?.close());

  async function recording(channels: 1 | 2) {
    const rec = await stack.emulator.createRecording({ bytes: SIZE, channels });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    return { ...rec, callSid: rec.call_sid, sid: rec.recording_sid as string };
  }
  const requests = (sid: string) => stack.emulator.stats().media_requests[sid] ?? 0;

  let dual: Awaited<ReturnType<typeof recording>>;

  it('each variant is downloaded once, stored beside the canonical file, and served with its type', async () => {
    const rec = await recording(2);
    dual = rec;
    const durationS = generateMp3({ seed: rec.sid, bytes: SIZE }).durationS;
    const expected = [
      {
        query: '?channels=2',
        type: 'audio/mpeg',
        file: `${rec.callSid}.dual.mp3`,
        data: generateMp3({ seed: rec.sid, bytes: SIZE, channels: 2 }).data,
      },
      {
        query: '?format=wav',
        type: 'audio/wav',
        file: `${rec.callSid}.wav`,
        data: generateWav({ seed: rec.sid, durationS }).data,
      },
      {
        query: '?channels=2&format=wav',
        type: 'audio/wav',
        file: `${rec.callSid}.dual.wav`,
        data: generateWav({ seed: rec.sid, durationS, channels: 2 }).data,
      },
      { query: '', type: 'audio/mpeg', file: `${rec.callSid}.mp3`, data: null },
    ];
    const etags = new Set<string>();
    for (const [i, v] of expected.entries()) {
      // A stampede on each variant: one upstream request each.
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => get(stack, `/api/calls/${rec.callSid}/download${v.query}`, auth)),
      );
      for (const res of answers) {
        assert.equal(res.status, 200, v.query);
        assert.equal(res.headers['content-type'], v.type, v.query);
        if (v.data === null) assert.equal(sha256(res.bytes), rec.sha256);
        else assert.ok(res.bytes.equals(v.data), `${v.query || 'canonical'}: the emulator's rendition`);
      }
      etags.add(String(answers[0]!.headers.etag));
      assert.equal(requests(rec.sid), i + 1, `${v.query || 'canonical'} was fetched once`);
    }
    assert.equal(etags.size, 4, 'every variant has its own entity tag');
    await until('every variant is committed', () => stored(stack, rec.callSid).length === 4);
    assert.deepEqual(stored(stack, rec.callSid), expected.map((v) => v.file).sort());
    // The dual-channel WAV is stereo.
    const wav = await get(stack, `/api/calls/${rec.callSid}/download?format=wav&channels=2`, auth);
    assert.equal(wav.bytes.readUInt16LE(22), 2);
    // Played again, from the cache, with ranges: no upstream request.
    const ranged = await get(stack, `/api/calls/${rec.callSid}/download?format=wav`, {
      ...auth,
      range: 'bytes=100-199',
    });
    assert.equal(ranged.status, 206);
    assert.ok(ranged.bytes.equals(expected[1]!.data!.subarray(100, 200)));
    const disposition = await get(stack, `/api/calls/${rec.callSid}/download?channels=2&download=1`, auth);
    assert.equal(
      disposition.headers['content-disposition'],
      `attachment; filename="${rec.callSid}.dual.mp3"`,
    );
    assert.equal(requests(rec.sid), 4, 'served from the cache');
  });

  it('a mono recording asked for as dual is a 409, and nothing is stored', async () => {
    const rec = await recording(1);
    for (const method of ['GET', 'HEAD']) {
      const res = await get(stack, `/api/calls/${rec.callSid}/download?channels=2`, auth, method);
      assert.equal(res.status, 409, method);
      if (method === 'GET') assert.equal(res.json().error.code, 'RECGATE_VARIANT_UNAVAILABLE');
    }
    assert.deepEqual(stored(stack, rec.callSid), []);
    // Its other variants play.
    const wav = await get(stack, `/api/calls/${rec.callSid}/download?format=wav`, auth);
    assert.equal(wav.status, 200);
    assert.equal(wav.bytes.readUInt16LE(22), 1);
    const mp3 = await get(stack, `/api/calls/${rec.callSid}/download`, auth);
    assert.equal(sha256(mp3.bytes), rec.sha256);
  });

  it('bad values are a 400 naming the field', async () => {
    const rec = await recording(1);
    for (const [query, field] of [
      ['channels=3', 'channels'],
      ['channels=', 'channels'],
      ['channels=2&channels=2', 'channels'],
      ['format=ogg', 'format'],
      ['format=WAV', 'format'],
    ] as const) {
      for (const route of ['download', 'peaks']) {
        const res = await get(stack, `/api/calls/${rec.callSid}/${route}?${query}`, auth);
        assert.equal(res.status, 400, `${route}?${query}`);
        assert.equal(res.json().error.code, 'RECGATE_INVALID_REQUEST');
        assert.match(res.json().error.message, new RegExp(`^${field} `));
      }
      const url = await get(stack, `/api/calls/${rec.callSid}/playback-url?${query}`, auth, 'POST');
      assert.equal(url.status, 400, `playback-url?${query}`);
    }
    assert.equal(requests(rec.sid), 0);
  });

  it('a playback URL carries its variant, and the signature binds it', async () => {
    const rec = dual;
    const issued = await get(stack, `/api/calls/${rec.callSid}/playback-url?channels=2`, auth, 'POST');
    assert.equal(issued.status, 200);
    const url = new URL(issued.json().url);
    assert.equal(url.searchParams.get('channels'), '2');
    const played = await get(stack, url.href);
    assert.equal(played.status, 200);
    assert.ok(played.bytes.equals(generateMp3({ seed: rec.sid, bytes: SIZE, channels: 2 }).data));
    const changed = (edit: (p: URLSearchParams) => void) => {
      const copy = new URL(url.href);
      edit(copy.searchParams);
      return copy.href;
    };
    for (const forged of [
      changed((p) => p.delete('channels')),
      changed((p) => p.set('format', 'wav')),
      changed((p) => p.set('channels', '1')),
    ]) {
      assert.equal((await get(stack, forged)).status, 401, forged);
    }
    const canonical = new URL(
      (await get(stack, `/api/calls/${rec.callSid}/playback-url`, auth, 'POST')).json().url,
    );
    assert.equal(canonical.searchParams.has('channels'), false);
    canonical.searchParams.set('format', 'wav');
    assert.equal(
      (await get(stack, canonical.href)).status,
      401,
      'no variant can be added to a canonical URL',
    );
  });

  it('peaks: computed once from the cached file, stored beside it, bounded by ?points', async () => {
    const rec = await recording(1);
    const mp3 = generateMp3({ seed: rec.sid, bytes: SIZE });
    const url = `/api/calls/${rec.callSid}/peaks`;
    // Not cached yet: every request waits for the one download.
    const answers = await Promise.all(Array.from({ length: 4 }, () => get(stack, url, auth)));
    for (const res of answers) {
      assert.equal(res.status, 200);
      assert.deepEqual(res.json(), answers[0]!.json());
    }
    const body = answers[0]!.json();
    assert.equal(body.duration_s, Math.round(mp3.durationS * 1000) / 1000);
    assert.equal(body.points, Math.min(800, Math.ceil((mp3.frames * MP3_SAMPLES_PER_FRAME) / BLOCK_FRAMES)));
    assert.equal(body.peaks.length, body.points);
    assert.ok(body.peaks.every((p: number) => Number.isInteger(p) && p >= 0 && p <= 255));
    assert.equal(requests(rec.sid), 1, 'one download');
    await until('the recording and its peaks are stored', () => stored(stack, rec.callSid).length === 2);
    assert.deepEqual(stored(stack, rec.callSid), [`${rec.callSid}.mp3`, `${rec.callSid}.peaks.json`]);
    // Later requests read the stored peaks: change them on disk and the answer follows.
    const file = path.join(stack.dataDir, 'recordings', `${rec.callSid}.peaks.json`);
    const kept = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...kept, peaks: [1, 2, 3, 4, 5, 6] }));
    assert.deepEqual((await get(stack, `${url}?points=3`, auth)).json(), {
      duration_s: body.duration_s,
      points: 3,
      peaks: [2, 4, 6],
    });
    // Peaks of another recording under the name are not used.
    writeFileSync(file, JSON.stringify({ ...kept, recording_sid: `RE${'0'.repeat(32)}`, peaks: [9] }));
    assert.deepEqual((await get(stack, url, auth)).json(), body);
    // Nor are those of version 1, estimated from the MP3's side information before peaks were exact.
    writeFileSync(file, JSON.stringify({ ...kept, version: 1, peaks: [9] }));
    assert.deepEqual((await get(stack, url, auth)).json(), body);
    for (const bad of ['0', '2001', 'x', '1.5']) {
      const res = await get(stack, `${url}?points=${bad}`, auth);
      assert.equal(res.status, 400, bad);
      assert.match(res.json().error.message, /^points /);
    }
    // The WAV variant's peaks are exact and kept beside it; a mono recording has no dual-channel peaks.
    const wav = await get(stack, `${url}?format=wav&points=50`, auth);
    assert.equal(wav.status, 200);
    assert.equal(wav.json().points, 50);
    assert.equal(Math.max(...wav.json().peaks), 255);
    await until('the WAV peaks are stored', () =>
      stored(stack, rec.callSid).includes(`${rec.callSid}.wav.peaks.json`),
    );
    const dual = await get(stack, `${url}?channels=2`, auth);
    assert.equal(dual.status, 409);
    assert.equal(dual.json().error.code, 'RECGATE_VARIANT_UNAVAILABLE');
    // A purge takes the peaks with the recording.
    await purge(stack, rec.callSid);
  });

  it('purge removes every variant', async () => {
    const rec = dual;
    assert.equal(stored(stack, rec.callSid).length, 4);
    await purge(stack, rec.callSid);
    assert.equal(
      readdirSync(path.join(stack.dataDir, 'recordings')).filter(
        (n) => n.includes(rec.callSid) && !n.endsWith('.lock'),
      ).length,
      0,
    );
  });
});

describe('variants and the bounded disk', () => {
  it('each variant is a cache-index row of its own, evicted least recently played first', async (t) => {
    // Room for the two MP3s and the WAV, less a byte: the third commit evicts exactly one file.
    const wavBytes = generateWav({
      seed: `RE${'0'.repeat(32)}`,
      durationS: generateMp3({ seed: `RE${'0'.repeat(32)}`, bytes: SIZE }).durationS,
    }).data.length;
    const stack = await startStack({ config: { cacheMaxBytes: String(2 * SIZE + wavBytes - 1) } });
    t.after(() => stack.close());
    const auth = { authorization: `Bearer ${await stack.token('acme')}` };
    const rec = await stack.emulator.createRecording({ bytes: SIZE, channels: 2 });
    const callSid = rec.call_sid;
    await stack.register({ businessId: 'acme', callSid: callSid as CallSid });
    const files = () =>
      readdirSync(path.join(stack.dataDir, 'recordings'))
        .filter((n) => /\.(mp3|wav)$/.test(n))
        .sort();
    // One after the other: a response may end before its file is renamed into place (and indexed).
    for (const [i, query] of ['', '?channels=2'].entries()) {
      assert.equal((await get(stack, `/api/calls/${callSid}/download${query}`, auth)).status, 200);
      await until(`file ${i + 1} is cached`, () => files().length === i + 1);
      if (i === 0) assert.equal((await get(stack, `/api/calls/${callSid}/peaks`, auth)).status, 200);
    }
    const peaks = path.join(stack.dataDir, 'recordings', `${callSid}.peaks.json`);
    await until('the peaks are stored', () =>
      readdirSync(path.dirname(peaks)).includes(path.basename(peaks)),
    );
    // A third file goes over the limit: the least recently played (the canonical file) goes.
    const wav = await get(stack, `/api/calls/${callSid}/download?format=wav`, auth);
    assert.equal(wav.status, 200);
    // The file goes first, then what belongs to it.
    await until(
      'the oldest variant was evicted, its peaks too',
      () =>
        !files().includes(`${callSid}.mp3`) &&
        !readdirSync(path.dirname(peaks)).includes(path.basename(peaks)),
    );
    assert.deepEqual(files(), [`${callSid}.dual.mp3`, `${callSid}.wav`].sort());
    assert.deepEqual(
      readdirSync(path.dirname(peaks))
        .filter((n) => !n.startsWith('.'))
        .sort(),
      [`${callSid}.dual.mp3`, `${callSid}.wav`].sort(),
      'its peaks went with it',
    );
  });
});

describe('variants across gateways', () => {
  it('two gateways on one recordings directory download each variant once between them', async (t) => {
    const first = await startStack();
    t.after(() => first.close());
    const second = await startStack({ sharedEmulator: first.emulator, dataDir: first.dataDir });
    t.after(() => second.close());
    const rec = await first.emulator.createRecording({ bytes: SIZE, channels: 2 });
    await first.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    const auth = { authorization: `Bearer ${await first.token('acme')}` };
    const expected = generateMp3({ seed: rec.recording_sid!, bytes: SIZE, channels: 2 }).data;
    for (const [i, query] of ['?channels=2', '?channels=2&format=wav'].entries()) {
      const answers = await Promise.all(
        [first, second, first, second].map((stack) =>
          get(stack, `/api/calls/${rec.call_sid}/download${query}`, auth),
        ),
      );
      for (const res of answers) assert.equal(res.status, 200, query);
      if (i === 0) for (const res of answers) assert.ok(res.bytes.equals(expected));
      assert.equal(
        first.emulator.stats().media_requests[rec.recording_sid!],
        i + 1,
        `${query}: one download`,
      );
    }
  });
});
