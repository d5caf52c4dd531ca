/**
 * The cache never serves a file as a recording it does not hold: files are tied to their recording SID,
 * a body that is not audio is never kept, and a writer's generation is its own.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { RecordingRef } from '../../src/recordings/cache.js';
import type { RecordingSid } from '../../src/sid.js';
import { isCode } from '../helpers/common.js';
import {
  audioBytes,
  FakeUpstream,
  finishedFiles,
  hex32,
  makeCache,
  newRef,
  readAll,
  settled,
  tempDir,
} from './helpers.js';

async function play(cache: ReturnType<typeof makeCache>['cache'], ref: RecordingRef) {
  const rec = await cache.open(ref);
  return { rec, body: await readAll(rec.createReadStream(0, rec.size - 1)) };
}

function identityOf(dir: string, ref: RecordingRef): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, `.${ref.ownerCallSid}.mp3.id`), 'utf8'));
}

describe('recording identity', () => {
  it("a file holding the call's previous recording is a miss: the new one is fetched once and replaces it", async (t) => {
    const dir = tempDir(t);
    const old = audioBytes(120_000);
    const fresh = audioBytes(150_000);
    const first = newRef();
    const upstream = new FakeUpstream({ data: old, etag: '"old"' });
    const { cache, names } = makeCache(t, dir, upstream);
    assert.ok((await play(cache, first)).body.equals(old));
    await settled(dir, first);
    assert.equal(identityOf(dir, first).recordingSid, first.recordingSid);
    assert.equal(identityOf(dir, first).etag, '"old"');

    // The admin API (or a webhook) names another recording for the same call.
    const second: RecordingRef = {
      ownerCallSid: first.ownerCallSid,
      recordingSid: `RE${hex32()}` as RecordingSid,
    };
    upstream.options = { data: fresh, etag: '"new"' };
    const { rec, body } = await play(cache, second);
    assert.equal(rec.outcome, 'miss');
    assert.ok(body.equals(fresh));
    assert.equal(rec.etag, `"${second.recordingSid}-${fresh.length}"`);
    await settled(dir, second);
    assert.equal(identityOf(dir, second).recordingSid, second.recordingSid);
    assert.ok(readFileSync(join(dir, `${second.ownerCallSid}.mp3`)).equals(fresh));
    const again = await play(cache, second);
    assert.equal(again.rec.outcome, 'hit');
    assert.ok(again.body.equals(fresh));
    assert.equal(upstream.calls.length, 2);
    assert.deepEqual(
      names().filter((n) => n === 'cache_miss'),
      ['cache_miss', 'cache_miss'],
    );
  });

  it('another process sees the replacement at once, though it kept the old file open', async (t) => {
    const dir = tempDir(t);
    const old = audioBytes(80_000);
    const fresh = audioBytes(90_000);
    const first = newRef();
    const upstreamA = new FakeUpstream({ data: old });
    const a = makeCache(t, dir, upstreamA);
    const upstreamB = new FakeUpstream({ data: fresh });
    const b = makeCache(t, dir, upstreamB);
    await play(a.cache, first);
    await settled(dir, first);
    // B has the old file open from serving it.
    assert.equal((await play(b.cache, first)).rec.outcome, 'hit');
    const second: RecordingRef = {
      ownerCallSid: first.ownerCallSid,
      recordingSid: `RE${hex32()}` as RecordingSid,
    };
    upstreamA.options = { data: fresh };
    assert.ok((await play(a.cache, second)).body.equals(fresh));
    await settled(dir, second);
    const seen = await play(b.cache, second);
    assert.equal(seen.rec.outcome, 'hit');
    assert.ok(seen.body.equals(fresh));
    assert.equal(upstreamB.calls.length, 0);
  });

  it('a file without an identity record (a crash before the rename, or an older version) is fetched again once', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(60_000);
    const ref = newRef();
    writeFileSync(join(dir, `${ref.ownerCallSid}.mp3`), Buffer.alloc(60_000, 0x55));
    const upstream = new FakeUpstream({ data });
    const { cache } = makeCache(t, dir, upstream);
    const { rec, body } = await play(cache, ref);
    assert.equal(rec.outcome, 'miss');
    assert.ok(body.equals(data), 'never the bytes of unknown origin');
    await settled(dir, ref);
    assert.deepEqual(readdirSync(dir).sort(), finishedFiles(ref));
    assert.equal((await play(cache, ref)).rec.outcome, 'hit');
    assert.equal(upstream.calls.length, 1);
  });
});

describe('bad media is never stored', () => {
  const HTML = Buffer.from(
    '<!DOCTYPE html><html><head><title>Twilio - Error</title></head><body><h1>Service unavailable</h1>' +
      '<p>Something went wrong. Please try again later.</p></body></html>',
  );

  for (const [name, options] of [
    ['an HTML page declared as text/html', { data: HTML, contentType: 'text/html; charset=utf-8' }],
    ['an HTML page declared as audio/mpeg', { data: HTML, contentType: 'audio/mpeg' }],
    ['an empty body', { data: Buffer.alloc(0) }],
    [
      'JSON declared as application/json',
      { data: Buffer.from('{"code":20500}'), contentType: 'application/json' },
    ],
    ['random bytes with no audio framing', { data: Buffer.alloc(5000, 0x41), contentType: null }],
  ] as const) {
    it(`${name}: RECGATE_UPSTREAM_BAD_MEDIA before any header, nothing cached, served once the upstream recovers`, async (t) => {
      const dir = tempDir(t);
      const upstream = new FakeUpstream({ ...options });
      const { cache, named } = makeCache(t, dir, upstream);
      const ref = newRef();
      await assert.rejects(cache.open(ref), isCode('RECGATE_UPSTREAM_BAD_MEDIA'));
      assert.equal(named('download_failed')[0]?.code, 'RECGATE_UPSTREAM_BAD_MEDIA');
      assert.equal(upstream.calls.length, 1, 'a bad body is not retried');
      assert.deepEqual(
        readdirSync(dir).filter((n) => !n.endsWith('.lock')),
        [],
      );
      const good = audioBytes(40_000);
      upstream.options = { data: good };
      const { rec, body } = await play(cache, ref);
      assert.equal(rec.outcome, 'miss');
      assert.ok(body.equals(good));
      await settled(dir, ref);
    });
  }

  it('a WAV body declared as MP3 is refused; a WAV declared as WAV is kept', async (t) => {
    const dir = tempDir(t);
    const wav = Buffer.alloc(44 + 8000);
    wav.write('RIFF', 0, 'ascii');
    wav.writeUInt32LE(wav.length - 8, 4);
    wav.write('WAVEfmt ', 8, 'ascii');
    wav.writeUInt32LE(16, 16);
    wav.writeUInt16LE(1, 20);
    wav.writeUInt16LE(1, 22);
    wav.writeUInt32LE(8000, 24);
    wav.writeUInt32LE(16000, 28);
    wav.writeUInt16LE(2, 32);
    wav.writeUInt16LE(16, 34);
    wav.write('data', 36, 'ascii');
    wav.writeUInt32LE(8000, 40);
    const upstream = new FakeUpstream({ data: wav, contentType: 'audio/mpeg' });
    const { cache } = makeCache(t, dir, upstream);
    await assert.rejects(cache.open(newRef()), isCode('RECGATE_UPSTREAM_BAD_MEDIA'));
    upstream.options = { data: wav, contentType: 'audio/x-wav' };
    const ref = newRef();
    assert.ok((await play(cache, ref)).body.equals(wav));
  });
});
