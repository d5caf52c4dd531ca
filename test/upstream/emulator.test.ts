/**
 * The Twilio client against the real emulator: every fault kind the emulator can inject, through its HTTP
 * control API, and how the client reacts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, beforeEach, describe, type TestContext, test } from 'node:test';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import {
  type RequestEvent,
  type RetryEvent,
  TwilioClient,
  type TwilioClientOptions,
} from '../../src/upstream/twilio-client.js';
import { isCode, readAll } from './helpers.js';

let emulator: Emulator;

before(async () => {
  emulator = await startEmulator({ port: 0 });
});

after(async () => {
  await emulator.close();
});

beforeEach(async () => {
  await control('/__emulator/reset', {});
});

async function control(path: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${emulator.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(res.ok, `${path} answered ${res.status}: ${await res.clone().text()}`);
  return res.json();
}

interface Recording {
  call_sid: CallSid;
  recording_sid: RecordingSid;
  size: number;
  sha256: string;
}

async function createRecording(body: Record<string, unknown> = {}): Promise<Recording> {
  return (await control('/__emulator/recordings', { bytes: 20_000, ...body })) as Recording;
}

async function fault(recording: Recording, kind: string, extra: Record<string, unknown> = {}): Promise<void> {
  await control('/__emulator/faults', { recording_sid: recording.recording_sid, kind, ...extra });
}

async function mediaRequests(recording: Recording): Promise<number> {
  const res = await fetch(`${emulator.url}/__emulator/stats`);
  const stats = (await res.json()) as { media_requests: Record<string, number> };
  return stats.media_requests[recording.recording_sid] ?? 0;
}

function makeClient(t: TestContext, overrides: Partial<TwilioClientOptions> = {}): TwilioClient {
  const client = new TwilioClient({
    baseUrl: emulator.url,
    accountSid: emulator.accountSid,
    authToken: emulator.authToken,
    headersTimeoutMs: 2000,
    bodyIdleTimeoutMs: 2000,
    ...overrides,
    retry: { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 20, maxTotalMs: 10_000, ...overrides.retry },
  });
  t.after(() => client.close());
  return client;
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

describe('TwilioClient against the emulator', () => {
  test('reads calls, recordings and a call’s recording list', async (t) => {
    const first = await createRecording();
    const second = await createRecording({ call_sid: first.call_sid });
    const client = makeClient(t);
    const call = await client.getCall(first.call_sid);
    assert.equal(call?.sid, first.call_sid);
    assert.equal(call?.parentCallSid, null);
    const recording = await client.getRecording(first.recording_sid);
    assert.equal(recording?.status, 'completed');
    assert.equal(recording?.callSid, first.call_sid);
    const list = await client.listCallRecordings(first.call_sid);
    assert.deepEqual(list.map((r) => r.sid).sort(), [first.recording_sid, second.recording_sid].sort());
    assert.equal(await client.getCall(`CA${'0'.repeat(32)}` as CallSid), undefined);
    assert.equal(await client.getRecording(`RE${'0'.repeat(32)}` as RecordingSid), undefined);
    assert.deepEqual(await client.listCallRecordings(`CA${'0'.repeat(32)}` as CallSid), []);
  });

  test('wrong credentials are RECGATE_UPSTREAM_AUTH', async (t) => {
    const rec = await createRecording();
    const client = makeClient(t, { authToken: 'wrong-token' });
    await assert.rejects(client.fetchMedia(rec.recording_sid), isCode('RECGATE_UPSTREAM_AUTH'));
    await assert.rejects(client.getRecording(rec.recording_sid), isCode('RECGATE_UPSTREAM_AUTH'));
  });

  test('downloads the whole recording and a Range of it', async (t) => {
    const rec = await createRecording();
    const client = makeClient(t);
    const whole = await client.fetchMedia(rec.recording_sid);
    assert.equal(whole.status, 200);
    assert.equal(whole.totalSize, rec.size);
    assert.equal(whole.acceptsRanges, true);
    assert.ok(whole.etag);
    const bytes = await readAll(whole.body);
    assert.equal(sha256(bytes), rec.sha256);

    const part = await client.fetchMedia(rec.recording_sid, { start: 1000, end: 1999, ifRange: whole.etag });
    assert.equal(part.status, 206);
    assert.equal(part.start, 1000);
    assert.equal(part.totalSize, rec.size);
    assert.deepEqual(await readAll(part.body), bytes.subarray(1000, 2000));
  });

  test('http_500 is retried, then the download succeeds', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'http_500', { count: 2 });
    const retries: RetryEvent[] = [];
    const media = await makeClient(t, { onRetry: (e) => retries.push(e) }).fetchMedia(rec.recording_sid);
    assert.equal(sha256(await readAll(media.body)), rec.sha256);
    assert.deepEqual(
      retries.map((e) => [e.reason, e.status]),
      [
        ['server_error', 500],
        ['server_error', 500],
      ],
    );
    assert.equal(await mediaRequests(rec), 3);
  });

  test('http_500 beyond maxAttempts is RECGATE_UPSTREAM_UNAVAILABLE', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'http_500', { count: 10 });
    await assert.rejects(
      makeClient(t, { retry: { maxAttempts: 3 } }).fetchMedia(rec.recording_sid),
      isCode('RECGATE_UPSTREAM_UNAVAILABLE'),
    );
    assert.equal(await mediaRequests(rec), 3);
  });

  test('rate_limit waits the Retry-After', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'rate_limit', { retry_after: 1 });
    const retries: RetryEvent[] = [];
    const started = Date.now();
    const media = await makeClient(t, {
      onRetry: (e) => retries.push(e),
      retry: { maxDelayMs: 5000 },
    }).fetchMedia(rec.recording_sid);
    assert.equal(sha256(await readAll(media.body)), rec.sha256);
    assert.ok(Date.now() - started >= 950, 'waited about one second');
    assert.deepEqual(
      retries.map((e) => [e.reason, e.status, e.delayMs]),
      [['rate_limited', 429, 1000]],
    );
    assert.equal(await mediaRequests(rec), 2);
  });

  test('not_ready 404s are retried until the media is there', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'not_ready', { count: 3 });
    const retries: RetryEvent[] = [];
    const media = await makeClient(t, { onRetry: (e) => retries.push(e) }).fetchMedia(rec.recording_sid);
    assert.equal(sha256(await readAll(media.body)), rec.sha256);
    assert.deepEqual(
      retries.map((e) => e.reason),
      ['not_ready', 'not_ready', 'not_ready'],
    );
    assert.equal(await mediaRequests(rec), 4);
  });

  test('a processing recording is retried until it completes', async (t) => {
    const rec = await createRecording({ status: 'processing', ready_after_ms: 300 });
    const client = makeClient(t, { retry: { maxAttempts: 100, baseDelayMs: 20, maxDelayMs: 50 } });
    const media = await client.fetchMedia(rec.recording_sid);
    assert.equal(sha256(await readAll(media.body)), rec.sha256);
    assert.ok((await mediaRequests(rec)) >= 2);
  });

  test('a recording that stays processing ends in RECGATE_RECORDING_NOT_READY', async (t) => {
    const rec = await createRecording({ status: 'processing' });
    await assert.rejects(
      makeClient(t, { retry: { maxAttempts: 3 } }).fetchMedia(rec.recording_sid),
      isCode('RECGATE_RECORDING_NOT_READY'),
    );
    assert.equal(await mediaRequests(rec), 3);
  });

  test('reset_mid_body errors the body stream', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'reset_mid_body');
    const media = await makeClient(t).fetchMedia(rec.recording_sid);
    assert.equal(media.contentLength, rec.size);
    await assert.rejects(readAll(media.body), isCode('RECGATE_UPSTREAM_UNAVAILABLE'));
    assert.equal(await mediaRequests(rec), 1);
  });

  test('a body that breaks before anyone reads it neither crashes the process nor hides the error', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'reset_mid_body', { after_bytes: 1000 });
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const media = await makeClient(t).fetchMedia(rec.recording_sid);
      // Nobody reads while the connection breaks (as while the cache still opens its partial file).
      await new Promise((r) => setTimeout(r, 500));
      await assert.rejects(readAll(media.body), isCode('RECGATE_UPSTREAM_UNAVAILABLE'));
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    assert.deepEqual(uncaught, []);
  });

  test('short_body errors the body stream instead of ending quietly', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'short_body');
    const media = await makeClient(t).fetchMedia(rec.recording_sid);
    await assert.rejects(readAll(media.body), (err: unknown) => {
      isCode('RECGATE_UPSTREAM_UNAVAILABLE')(err);
      assert.match((err as Error).message, /ended after \d+ of \d+ bytes/);
      return true;
    });
    assert.equal(await mediaRequests(rec), 1);
  });

  test('stall errors the body after bodyIdleTimeoutMs', async (t) => {
    const rec = await createRecording();
    await fault(rec, 'stall', { after_bytes: 1000, stall_ms: 30_000 });
    const media = await makeClient(t, { bodyIdleTimeoutMs: 200 }).fetchMedia(rec.recording_sid);
    const started = Date.now();
    await assert.rejects(readAll(media.body), isCode('RECGATE_UPSTREAM_TIMEOUT'));
    assert.ok(Date.now() - started < 10_000);
  });

  test('a deleted recording is RECGATE_RECORDING_GONE after one metadata check and no media retries', async (t) => {
    const rec = await createRecording({ status: 'deleted' });
    const requests: RequestEvent[] = [];
    const retries: RetryEvent[] = [];
    const client = makeClient(t, { onRequest: (e) => requests.push(e), onRetry: (e) => retries.push(e) });
    await assert.rejects(client.fetchMedia(rec.recording_sid), isCode('RECGATE_RECORDING_GONE'));
    assert.equal(await mediaRequests(rec), 1);
    assert.deepEqual(
      requests.map((e) => e.status),
      [404, 404],
      'one media request and one metadata request',
    );
    assert.deepEqual(retries, []);
  });
});
