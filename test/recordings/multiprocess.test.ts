/**
 * The cache across worker processes: each case runs child processes (`fixtures/cache-child.ts`) on one
 * recordings directory, against an upstream that counts requests from every process.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, startEmulator } from '../../src/emulator/index.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { createRecordingCache } from '../../src/recordings/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import {
  audioBytes,
  Child,
  FakeUpstream,
  httpUpstream,
  newRef,
  partPath,
  readAll,
  settled,
  sha256,
  startMediaServer,
  tempDir,
} from './helpers.js';

type Result = { start: number; end: number; length: number; sha256: string; outcome: string };

function checkResults(results: Result[], data: Buffer): void {
  for (const r of results) {
    assert.equal(r.length, r.end - r.start + 1);
    assert.equal(r.sha256, sha256(data.subarray(r.start, r.end + 1)), `bytes ${r.start}-${r.end}`);
  }
}

async function waitForPartial(dir: string, ref: RecordingRef, minBytes: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const part = partPath(dir, ref);
    if (part !== undefined && existsSync(part) && statSync(part).size >= minBytes) return;
    await sleep(5);
  }
  assert.fail('the child never wrote the partial');
}

describe('recording cache across processes', () => {
  it('streams to a waiter in another process while the download runs there', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(16 * 16 * 1024);
    // 16 chunks 70 ms apart: about 1.1 s for the whole body.
    const server = await startMediaServer({ data, chunkDelayMs: 70 });
    t.after(() => server.close());
    const ref = newRef();
    const child = new Child('cache-child.ts', {
      dir,
      ref,
      reads: 1,
      autostart: true,
      upstream: { kind: 'http', url: server.url },
    });
    t.after(() => child.kill());
    await waitForPartial(dir, ref, 1);
    const upstream = new FakeUpstream({ data });
    const { logger, events } = captureLogs({ plain: true });
    const cache = createRecordingCache({ dir, upstream, logger, pollIntervalMs: 10, lockTimeoutMs: 10_000 });
    t.after(() => cache.close());
    const started = performance.now();
    const rec = await cache.open(ref);
    assert.equal(rec.outcome, 'wait');
    assert.equal(rec.size, data.length);
    let firstByteMs = -1;
    const chunks: Buffer[] = [];
    for await (const chunk of rec.createReadStream(0, rec.size - 1)) {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(chunk as Buffer);
    }
    const totalMs = performance.now() - started;
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.ok(totalMs > 500, `the download ran ${totalMs} ms after the waiter joined`);
    assert.ok(firstByteMs < 300, `first byte after ${firstByteMs} ms of ${totalMs}`);
    checkResults((await child.next('done')).results as Result[], data);
    assert.equal(server.ranges.length, 1);
    assert.equal(upstream.calls.length, 0);
    await settled(dir, ref);
    await sleep(30);
    assert.ok(events().includes('lock_wait'));
    assert.ok(events().includes('available_while_waiting'));
    child.send({ cmd: 'exit' });
    await child.exited;
  });

  it('stampede: 4 worker processes x 30 concurrent requests, one upstream media request (emulator + TwilioClient)', async (t) => {
    const dir = tempDir(t);
    const emulator = await startEmulator({ port: 0, bandwidth: 600_000 });
    t.after(() => emulator.close());
    const created = await emulator.createRecording({ bytes: 400_000 });
    const ref: RecordingRef = {
      ownerCallSid: created.recording_call_sid as CallSid,
      recordingSid: created.recording_sid as RecordingSid,
    };
    const children = Array.from(
      { length: 4 },
      () =>
        new Child('cache-child.ts', {
          dir,
          ref,
          reads: 30,
          upstream: {
            kind: 'twilio',
            baseUrl: emulator.url,
            accountSid: DEFAULT_ACCOUNT_SID,
            authToken: DEFAULT_AUTH_TOKEN,
          },
        }),
    );
    t.after(() => {
      for (const c of children) c.kill();
    });
    await Promise.all(children.map((c) => c.next('ready')));
    for (const c of children) c.send({ cmd: 'go' });
    const done = await Promise.all(children.map((c) => c.next('done', 30_000)));
    await settled(dir, ref);
    const data = readFileSync(join(dir, `${ref.ownerCallSid}.mp3`));
    assert.equal(data.length, created.size);
    assert.equal(sha256(data), created.sha256);
    for (const d of done) checkResults(d.results as Result[], data);
    assert.equal(emulator.stats().media_requests[ref.recordingSid], 1);
    assert.equal(emulator.stats().total_media_requests, 1);
    const misses = children.flatMap((c) =>
      c.messages.filter((m) => m.type === 'event' && m.name === 'cache_miss'),
    );
    assert.equal(misses.length, 1);
    for (const c of children) c.send({ cmd: 'exit' });
    await Promise.all(children.map((c) => c.exited));
  });

  for (const acceptsRanges of [true, false]) {
    it(`takeover after the downloading process is SIGKILLed (${acceptsRanges ? 'resume with Range' : 'no Range: restart'})`, async (t) => {
      const dir = tempDir(t);
      const data = audioBytes(32 * 16 * 1024);
      const server = await startMediaServer({ data, chunkDelayMs: 20, acceptsRanges });
      t.after(() => server.close());
      const ref = newRef();
      const child = new Child('cache-child.ts', {
        dir,
        ref,
        reads: 1,
        autostart: true,
        upstream: { kind: 'http', url: server.url },
      });
      t.after(() => child.kill());
      await waitForPartial(dir, ref, 1);
      const capture = captureLogs({ plain: true });
      const cache = createRecordingCache({
        dir,
        upstream: httpUpstream(server.url),
        logger: capture.logger,
        pollIntervalMs: 5,
        lockTimeoutMs: 10_000,
      });
      t.after(() => cache.close());
      const rec = await cache.open(ref);
      assert.equal(rec.outcome, 'wait');
      const reading = readAll(rec.createReadStream(0, rec.size - 1));
      const ranged = readAll(rec.createReadStream(100_000, 300_000));
      await waitForPartial(dir, ref, 150_000);
      child.kill('SIGKILL');
      await child.exited;
      const killedAt = statSync(partPath(dir, ref)!).size;
      assert.ok(killedAt < data.length, 'killed mid-download');
      assert.ok((await reading).equals(data));
      assert.ok((await ranged).equals(data.subarray(100_000, 300_001)));
      await settled(dir, ref);
      assert.ok(readFileSync(join(dir, `${ref.ownerCallSid}.mp3`)).equals(data));
      assert.equal(server.ranges.length, 2);
      assert.equal(server.ranges[0], null);
      if (acceptsRanges) {
        const match = /^bytes=(\d+)-$/.exec(server.ranges[1] ?? '');
        assert.ok(match, `second request asks for a range: ${server.ranges[1]}`);
        assert.ok(Number(match[1]) > 0 && Number(match[1]) >= killedAt - 64 * 1024);
      }
      await until('recording_saved', () => capture.events().includes('recording_saved'), 5000);
      const names = capture.events();
      assert.ok(names.includes('lock_wait'));
      assert.ok(names.includes('takeover'));
      assert.equal(names.includes('download_resumed'), acceptsRanges);
      assert.ok(names.includes('recording_saved'));
    });
  }
});
