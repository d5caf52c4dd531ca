/**
 * Prefetch end to end: a signed `completed` recording-status webhook queues the recording, a worker
 * downloads it, and the first play is a hit; the queue survives a restart; `absent` and `failed` statuses
 * are kept and shown.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { parseDatabaseUrl } from '../../src/config/database-url.js';
import { startEmulator } from '../../src/emulator/index.js';
import { openPrefetchQueue } from '../../src/prefetch/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { finishedNames, settledFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';

const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

/** The queue in a data dir's SQLite call log (which always has one). */
async function openQueue(dataDir: string) {
  const queue = await openPrefetchQueue(parseDatabaseUrl(undefined, dataDir));
  assert.ok(queue, 'a database file has a prefetch queue');
  return queue;
}

async function webhook(stack: Stack, params: Record<string, string>) {
  assert.equal(await stack.recordingStatus(params), 204);
}

async function completedCall(stack: Stack, business = 'acme') {
  const callSid = newCallSid();
  const rec = await stack.emulator.createRecording({ call_sid: callSid, bytes: 8_000 });
  await stack.register({ businessId: business, callSid });
  return { callSid, recordingSid: rec.recording_sid as RecordingSid, sha256: rec.sha256 };
}

describe('prefetch', () => {
  const roots: string[] = [];
  after(async () => {
    for (const root of roots) await rm(root, { recursive: true, force: true });
  });

  it('a completed webhook downloads the recording before anyone plays it; the first play is a hit', async (t) => {
    const stack = await startStack();
    t.after(() => stack.close());
    const call = await completedCall(stack);
    await webhook(stack, {
      CallSid: call.callSid,
      RecordingSid: call.recordingSid,
      RecordingStatus: 'completed',
    });
    const dir = path.join(stack.dataDir, 'recordings');
    assert.deepEqual(await settledFiles(dir, call.callSid), finishedNames(call.callSid));
    assert.equal(stack.emulator.stats().media_requests[call.recordingSid], 1);
    const token = await stack.token('acme');
    const res = await request(`${stack.url}/api/calls/${call.callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    assert.equal(sha256(Buffer.from(await res.body.arrayBuffer())), call.sha256);
    assert.equal(stack.emulator.stats().media_requests[call.recordingSid], 1, 'the play was a hit');
  });

  it('the queue survives a restart: a job queued while prefetching is off runs on the next start', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-prefetch-'));
    roots.push(dataDir);
    const emulator = await startEmulator({ port: 0, logger: false });
    const off = await startStack({ dataDir, sharedEmulator: emulator, config: { prefetchConcurrency: 0 } });
    const call = await completedCall(off);
    await webhook(off, {
      CallSid: call.callSid,
      RecordingSid: call.recordingSid,
      RecordingStatus: 'completed',
    });
    const queue = await openQueue(dataDir);
    assert.equal((await queue.get(call.recordingSid))?.state, 'queued');
    await off.close();
    assert.equal(emulator.stats().total_media_requests, 0, 'nothing was fetched while prefetching was off');

    // The same data dir (call log and queue) and the same Twilio behind a new gateway.
    const on = await startStack({ dataDir, sharedEmulator: off.emulator });
    try {
      const dir = path.join(dataDir, 'recordings');
      assert.deepEqual(await settledFiles(dir, call.callSid), finishedNames(call.callSid));
      assert.equal((await queue.get(call.recordingSid))?.state, 'done');
      assert.equal(on.emulator.stats().media_requests[call.recordingSid], 1);
    } finally {
      await on.close();
      await emulator.close();
      await queue.close();
    }
  });

  it('an in-memory database has no queue: prefetch is off, and a completed webhook is still recorded', async (t) => {
    assert.equal(await openPrefetchQueue(parseDatabaseUrl('sqlite::memory:', '/nonexistent')), undefined);
    const stack = await startStack({ config: { databaseUrl: 'sqlite::memory:' } });
    t.after(() => stack.close());
    const call = await completedCall(stack);
    await webhook(stack, {
      CallSid: call.callSid,
      RecordingSid: call.recordingSid,
      RecordingStatus: 'completed',
    });
    const token = await stack.token('acme');
    const res = await request(`${stack.url}/api/calls/${call.callSid}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const body = (await res.body.json()) as { recording: { upstream_status: string } };
    assert.equal(body.recording.upstream_status, 'completed');
    assert.equal(stack.emulator.stats().total_media_requests, 0, 'nothing prefetched');
    const play = await request(`${stack.url}/api/calls/${call.callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(play.statusCode, 200);
    assert.equal(sha256(Buffer.from(await play.body.arrayBuffer())), call.sha256);
  });

  it('absent and failed statuses are kept and shown; they queue nothing', async (t) => {
    const stack = await startStack();
    t.after(() => stack.close());
    const token = await stack.token('acme');
    for (const status of ['absent', 'failed']) {
      const callSid = newCallSid();
      await stack.register({ businessId: 'acme', callSid });
      const recordingSid = `RE${randomBytes(16).toString('hex')}`;
      await webhook(stack, { CallSid: callSid, RecordingSid: recordingSid, RecordingStatus: status });
      const res = await request(`${stack.url}/api/calls/${callSid}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const body = (await res.body.json()) as { recording: { state: string; upstream_status: string } };
      assert.equal(body.recording.state, 'absent');
      assert.equal(body.recording.upstream_status, status);
    }
    const queue = await openQueue(stack.dataDir);
    t.after(() => queue.close());
    assert.deepEqual(await queue.depth(), { queued: 0, running: 0, failed: 0 });
  });
});
