/**
 * Prefetch end to end: a signed `completed` recording-status webhook queues the recording, a worker
 * downloads it, and the first play is a hit; the queue survives a restart; `absent` and `failed` statuses
 * are kept and shown; prefetch downloads wait for the same upstream slots as users' clicks, in the same
 * round-robin over businesses. The queue's gauge and the jobs' outcomes are read on /metrics.
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
import { metric } from '../helpers/metrics.js';
import { finishedNames, settledFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { until } from '../limits/admission-helpers.js';

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

  it('the queue survives a restart: a job queued while prefetching is off runs on the next start', async (t) => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-prefetch-'));
    roots.push(dataDir);
    const emulator = await startEmulator({ port: 0, logger: false });
    const open: Array<{ close(): Promise<void> }> = [emulator];
    // Whatever is still open, newest first, however the test ends (an open server keeps the file's process).
    t.after(async () => {
      for (const thing of open.reverse()) await thing.close();
    });
    const off = await startStack({ dataDir, sharedEmulator: emulator, config: { prefetchConcurrency: 0 } });
    open.push(off);
    const done = 'recgate_prefetch_jobs_total{outcome="done"}';
    const doneBefore = await metric(off, done);
    const call = await completedCall(off);
    await webhook(off, {
      CallSid: call.callSid,
      RecordingSid: call.recordingSid,
      RecordingStatus: 'completed',
    });
    const queue = await openQueue(dataDir);
    open.push(queue);
    assert.equal((await queue.get(call.recordingSid))?.state, 'queued');
    // The gauge is read from the queue after each enqueue (and every 10 s).
    await until('the queued job on /metrics', async () => {
      return (await metric(off, 'recgate_prefetch_queue{state="queued"}')) === 1;
    });
    await off.close();
    assert.equal(emulator.stats().total_media_requests, 0, 'nothing was fetched while prefetching was off');

    // The same data dir (call log and queue) and the same Twilio behind a new gateway.
    const on = await startStack({ dataDir, sharedEmulator: off.emulator });
    open.push(on);
    const dir = path.join(dataDir, 'recordings');
    assert.deepEqual(await settledFiles(dir, call.callSid), finishedNames(call.callSid));
    assert.equal((await queue.get(call.recordingSid))?.state, 'done');
    assert.equal(on.emulator.stats().media_requests[call.recordingSid], 1);
    // Counted right after the job's row says done.
    await until('the job counted done', async () => (await metric(on, done)) === doneBefore + 1);
    // Read from the shared queue at start and every 10 s: within one reading, nothing is left.
    await until(
      'an empty queue on /metrics',
      async () => (await metric(on, 'recgate_prefetch_queue')) === 0,
      30_000,
    );
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

  it("prefetch downloads wait for the same upstream slots as clicks: another business's click goes in its turn", async (t) => {
    const stack = await startStack({
      config: { upstreamConcurrency: 1, coldDownloadRate: 0, prefetchConcurrency: 4 },
    });
    // The click is cut first if the test fails before reading it, so closing the gateway waits for nothing.
    const leave = new AbortController();
    t.after(() => {
      leave.abort();
      return stack.close();
    });
    // Each download holds the one slot a while before its first byte, so prefetch jobs queue behind it.
    stack.emulator.setThrottle({ ttfbMs: 1500 });
    const granted = 'recgate_upstream_queue_wait_seconds_count';
    const done = 'recgate_prefetch_jobs_total{outcome="done"}';
    const [grantedBefore, doneBefore] = [await metric(stack, granted), await metric(stack, done)];
    const backlog: Array<Awaited<ReturnType<typeof completedCall>>> = [];
    for (let i = 0; i < 5; i++) backlog.push(await completedCall(stack, 'biz-a'));
    for (const call of backlog) {
      await webhook(stack, {
        CallSid: call.callSid,
        RecordingSid: call.recordingSid,
        RecordingStatus: 'completed',
      });
    }
    // Four jobs claimed at once: one download holds the slot, three wait in the admission queue.
    await until('three prefetch downloads of A waiting for the slot', async () => {
      return (await metric(stack, 'recgate_upstream_queue_depth')) >= 3;
    });

    const click = await completedCall(stack, 'biz-b');
    const before = stack.emulator.stats().total_media_requests;
    const clicked = request(`${stack.url}/api/calls/${click.callSid}/download`, {
      headers: { authorization: `Bearer ${await stack.token('biz-b')}` },
      signal: leave.signal,
    });
    await until("B's media request", () => stack.emulator.stats().media_requests[click.recordingSid] === 1);
    // B waited for the download in flight when it came (and at most one more, had that one ended while B's
    // own request was still being authenticated), never for A's queued prefetch downloads.
    const started = stack.emulator.stats().total_media_requests - before;
    const fetchedOfA = backlog.filter((c) => stack.emulator.stats().media_requests[c.recordingSid]).length;
    t.diagnostic(
      `B's click: ${started} media request(s) from the click to its own; ${fetchedOfA} of A's 5 begun`,
    );
    assert.ok(started <= 2, `${started} media requests from B's click to its own`);
    assert.ok(fetchedOfA <= 3, `${fetchedOfA} of A's prefetch downloads began before B's`);
    const res = await clicked;
    assert.equal(res.statusCode, 200);
    assert.equal(sha256(Buffer.from(await res.body.arrayBuffer())), click.sha256);

    const queue = await openQueue(stack.dataDir);
    t.after(() => queue.close());
    await until(
      "A's prefetch jobs done",
      async () =>
        (await Promise.all(backlog.map((c) => queue.get(c.recordingSid)))).every((j) => j?.state === 'done'),
      60_000,
    );
    for (const c of backlog) assert.equal(stack.emulator.stats().media_requests[c.recordingSid], 1);
    await until(
      'five prefetch jobs counted done',
      async () => (await metric(stack, done)) === doneBefore + 5,
    );
    // The admission granted a slot to each of the five prefetch downloads and to the click.
    assert.equal(await metric(stack, granted), grantedBefore + 6);
  });
});
