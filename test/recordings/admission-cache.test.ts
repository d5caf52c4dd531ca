/**
 * Admission inside the recording cache: who takes a slot and who never does, and why a download queued
 * while it holds the recording's lock never makes a follower in another process time out.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRecgateError } from '../../src/errors.js';
import { LocalAdmission } from '../../src/recordings/admission/local.js';
import {
  audioBytes,
  FakeUpstream,
  finishedFiles,
  MP3_FRAME_BYTES,
  makeCache,
  newRef,
  readAll,
  settled,
  tempDir,
} from './helpers.js';

it('hits and joins take no slot; only the process that downloads does', async (t) => {
  const dir = tempDir(t);
  const data = audioBytes(MP3_FRAME_BYTES * 40);
  const upstream = new FakeUpstream({ data, ttfbMs: 100 });
  const admission = new LocalAdmission({ concurrency: 1, maxQueue: 10, timeoutMs: 5000 });
  const granted: number[] = [];
  const { cache } = makeCache(t, dir, upstream, {
    gate: {
      admission: {
        acquire: (business, signal) => admission.acquire(business, signal).then(count(granted)),
        stats: () => admission.stats(),
        close: () => admission.close(),
      },
    },
  });
  const ref = newRef();
  const opened = await Promise.all([1, 2, 3].map(() => cache.open(ref, { businessId: 'biz' })));
  assert.deepEqual(
    opened.map((r) => r.outcome),
    ['miss', 'wait', 'wait'],
  );
  for (const rec of opened) assert.ok((await readAll(rec.createReadStream(0, rec.size - 1))).equals(data));
  await settled(dir, ref);
  const hit = await cache.open(ref, { businessId: 'biz' });
  assert.equal(hit.outcome, 'hit');
  assert.equal(granted.length, 1, 'one permit for one download');
  assert.equal(upstream.calls.length, 1);
});

it('frees its slot once the upstream body is in, before the commit renames the file into place', async (t) => {
  // The slot stands for an upstream request (Twilio caps them per account): a download that is only
  // committing its file has none left, and the next one may start.
  const dir = tempDir(t);
  const data = audioBytes(MP3_FRAME_BYTES * 40);
  const upstream = new FakeUpstream({ data });
  const admission = new LocalAdmission({ concurrency: 1, maxQueue: 10, timeoutMs: 5000 });
  const ref = newRef();
  const atRelease: Array<{ final: boolean; upstreamCalls: number }> = [];
  const { cache } = makeCache(t, dir, upstream, {
    gate: {
      admission: {
        acquire: async (business, signal) => {
          const permit = await admission.acquire(business, signal);
          return {
            release: () => {
              if (atRelease.length === 0) {
                atRelease.push({
                  final: existsSync(path.join(dir, finishedFiles(ref)[0]!)),
                  upstreamCalls: upstream.calls.length,
                });
              }
              permit.release();
            },
          };
        },
        stats: () => admission.stats(),
        close: () => admission.close(),
      },
    },
  });
  const rec = await cache.open(ref, { businessId: 'biz' });
  assert.ok((await readAll(rec.createReadStream(0, rec.size - 1))).equals(data));
  await settled(dir, ref);
  assert.deepEqual(atRelease, [{ final: false, upstreamCalls: 1 }]);
  assert.equal(admission.stats().active, 0);
});

it('a download queued holding the lock gives up before a follower elsewhere would time out; the follower takes over', async (t) => {
  const dir = tempDir(t);
  const data = audioBytes(MP3_FRAME_BYTES * 40);
  const upstream = new FakeUpstream({ data });
  // Process A: its one slot is taken, and its queue gives up after 200 ms; the lock timeout is 400 ms.
  const busy = new LocalAdmission({ concurrency: 1, maxQueue: 10, timeoutMs: 200 });
  const held = await busy.acquire('other');
  t.after(() => held.release());
  const a = makeCache(t, dir, upstream, { lockTimeoutMs: 400, gate: { admission: busy } });
  const b = makeCache(t, dir, upstream, { lockTimeoutMs: 400 });
  const ref = newRef();
  const queued = a.cache.open(ref, { businessId: 'biz' });
  queued.catch(() => undefined);
  await sleep(50);
  // Process B finds A holding the lock and follows it: it never queues in A's admission.
  const followed = b.cache.open(ref, { businessId: 'biz' });
  await assert.rejects(queued, (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_BUSY');
  const rec = await followed;
  assert.ok((await readAll(rec.createReadStream(0, rec.size - 1))).equals(data));
  assert.deepEqual(
    b.names().filter((n) => n === 'lock_wait' || n === 'takeover'),
    ['lock_wait', 'takeover'],
  );
  assert.equal(upstream.calls.length, 1, 'only the follower that took over asked upstream');
});

it('a queued download whose requests all left starts nothing, and a later request starts afresh', async (t) => {
  const dir = tempDir(t);
  const data = audioBytes(MP3_FRAME_BYTES * 40);
  const upstream = new FakeUpstream({ data });
  const admission = new LocalAdmission({ concurrency: 1, maxQueue: 10, timeoutMs: 5000 });
  const held = await admission.acquire('other');
  const { cache, named } = makeCache(t, dir, upstream, { gate: { admission } });
  const ref = newRef();
  const leave = new AbortController();
  const opening = cache.open(ref, { businessId: 'biz', signal: leave.signal });
  const waiting = cache.open(ref, { businessId: 'biz', signal: leave.signal });
  await sleep(50);
  assert.equal(admission.stats().queued, 1, 'two requests, one queued download');
  leave.abort(new Error('clients left'));
  await assert.rejects(opening);
  await assert.rejects(waiting);
  await sleep(20);
  assert.equal(admission.stats().queued, 0);
  assert.equal(named('download_failed')[0]?.code, 'RECGATE_CLIENT_CLOSED');
  held.release();
  await sleep(20);
  assert.equal(upstream.calls.length, 0, 'the abandoned download never started');
  const rec = await cache.open(ref, { businessId: 'biz' });
  assert.ok((await readAll(rec.createReadStream(0, rec.size - 1))).equals(data));
  assert.equal(upstream.calls.length, 1);
});

function count(granted: number[]) {
  return <T>(permit: T): T => {
    granted.push(granted.length);
    return permit;
  };
}
