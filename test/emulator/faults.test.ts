import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { type CreatedRecording, type Emulator, HTML_FAULT_PAGE } from '../../src/emulator/index.js';
import { checkContentType, sniffMedia, walkFrames } from '../../src/recordings/media-check.js';
import { accountUrl, basic, control, start } from './helpers.js';

const SIZE = 100_000;

describe('emulator media faults', () => {
  let emulator: Emulator;
  let recording: CreatedRecording;
  let other: CreatedRecording;
  const dispatcher = new Agent({ bodyTimeout: 5_000, headersTimeout: 5_000 });
  const get = (sid = recording.recording_sid!, signal?: AbortSignal, extension = '.mp3') =>
    request(accountUrl(emulator, `Recordings/${sid}${extension}`), {
      dispatcher,
      headers: { authorization: basic(emulator.accountSid, emulator.authToken) },
      ...(signal ? { signal } : {}),
    });
  const fault = async (body: Record<string, unknown>) => {
    const res = await control(emulator, 'faults', body);
    assert.equal(res.status, 201);
    await res.arrayBuffer();
  };
  const rejected = async (body: Record<string, unknown>) => {
    const res = await control(emulator, 'faults', body);
    assert.equal(res.status, 400);
    return ((await res.json()) as { error: { code: string; message: string } }).error;
  };
  /** Reads the whole body; resolves to the bytes read and the error that ended it, if any. */
  const drain = async (body: AsyncIterable<Buffer>) => {
    let bytes = 0;
    try {
      for await (const chunk of body) bytes += chunk.length;
      return { bytes, error: undefined };
    } catch (error) {
      return { bytes, error };
    }
  };

  before(async () => {
    emulator = await start();
    recording = await emulator.createRecording({ bytes: SIZE });
    other = await emulator.createRecording({ bytes: SIZE });
  });
  after(async () => {
    await emulator.close();
    await dispatcher.close();
  });
  beforeEach(() => emulator.reset());

  it('http_500: a 500 with Twilio error JSON, once', async () => {
    await fault({ kind: 'http_500' });
    const res = await get();
    assert.equal(res.statusCode, 500);
    const body = (await res.body.json()) as { code: number; status: number };
    assert.equal(body.status, 500);
    assert.equal(body.code, 20500);
    const next = await get();
    assert.equal(next.statusCode, 200);
    await next.body.arrayBuffer();
  });

  it('rate_limit: 429 with Retry-After (default 1, or retry_after)', async () => {
    await fault({ kind: 'rate_limit' });
    await fault({ kind: 'rate_limit', retry_after: 7 });
    const first = await get();
    assert.equal(first.statusCode, 429);
    assert.equal(first.headers['retry-after'], '1');
    assert.equal(((await first.body.json()) as { code: number }).code, 20429);
    const second = await get();
    assert.equal(second.statusCode, 429);
    assert.equal(second.headers['retry-after'], '7');
    await second.body.arrayBuffer();
  });

  it('not_ready: 404 with code 20404 while the metadata still exists', async () => {
    await fault({ kind: 'not_ready', count: 2 });
    for (let i = 0; i < 2; i++) {
      const res = await get();
      assert.equal(res.statusCode, 404);
      assert.equal(((await res.body.json()) as { code: number }).code, 20404);
    }
    const ok = await get();
    assert.equal(ok.statusCode, 200);
    await ok.body.arrayBuffer();
  });

  it('reset_mid_body: the client sees an error after part of the body', async () => {
    await fault({ kind: 'reset_mid_body' });
    const res = await get();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(SIZE));
    const { bytes, error } = await drain(res.body);
    assert.ok(error, 'the body errors');
    assert.ok(bytes < SIZE, `${bytes} bytes`);
    assert.equal(emulator.stats().media_bytes[recording.recording_sid!], SIZE / 2, 'the part that was sent');
  });

  it('short_body: fewer bytes than Content-Length, then the connection ends', async () => {
    await fault({ kind: 'short_body', after_bytes: 1000 });
    const res = await get();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(SIZE));
    const { bytes, error } = await drain(res.body);
    assert.ok(error !== undefined || bytes < SIZE, 'the client notices the short body');
    assert.ok(bytes <= 1000, `${bytes} bytes`);
    assert.deepEqual(emulator.stats().media_bytes, { [recording.recording_sid!]: 1000 });
    assert.equal(emulator.stats().total_media_bytes, 1000);
  });

  it('stall: headers, then no bytes until the client gives up', async () => {
    await fault({ kind: 'stall' });
    const controller = new AbortController();
    const res = await get(undefined, controller.signal);
    assert.equal(res.statusCode, 200);
    let received = 0;
    res.body.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    res.body.on('error', () => {});
    await sleep(300);
    assert.equal(received, 0);
    controller.abort();
  });

  it('stall with stall_ms and after_bytes: some bytes, silence, then the connection dies', async () => {
    await fault({ kind: 'stall', stall_ms: 200, after_bytes: 500 });
    const started = performance.now();
    const res = await get();
    const { bytes, error } = await drain(res.body);
    assert.ok(error, 'the body errors');
    assert.equal(bytes, 500);
    assert.ok(performance.now() - started >= 150);
    assert.equal(emulator.stats().media_bytes[recording.recording_sid!], 500);
  });

  it('html_page: 200 with a Twilio-like HTML page, typed text/html, once', async () => {
    await fault({ kind: 'html_page' });
    const res = await get();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    const page = Buffer.from(HTML_FAULT_PAGE);
    assert.equal(res.headers['content-length'], String(page.length));
    assert.equal(res.headers.etag, undefined, 'no validator of the recording');
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.ok(body.equals(page));
    assert.equal(checkContentType(String(res.headers['content-type'])), 'bad');
    assert.deepEqual(sniffMedia(body), {
      kind: 'bad',
      reason: 'an HTML page, not MP3 or WAV audio, titled Twilio - Service Temporarily Unavailable',
    });
    assert.deepEqual(emulator.stats().media_bytes, { [recording.recording_sid!]: page.length });
    const next = await get();
    assert.equal(next.headers['content-type'], 'audio/mpeg');
    assert.equal(sniffMedia(Buffer.from(await next.body.arrayBuffer())).kind, 'ok');
  });

  it('html_page with content_type: the same page, lying about its type; Range is ignored', async () => {
    await fault({ kind: 'html_page', content_type: 'audio/mpeg' });
    const res = await request(accountUrl(emulator, `Recordings/${recording.recording_sid}.mp3`), {
      dispatcher,
      headers: { authorization: basic(emulator.accountSid, emulator.authToken), range: 'bytes=0-99' },
    });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'audio/mpeg');
    assert.equal(res.headers['content-range'], undefined);
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(body.toString('utf8'), HTML_FAULT_PAGE);
    assert.equal(sniffMedia(body).kind, 'bad');
  });

  it('html_page answers even for a recording that is not ready, as a broken upstream would', async () => {
    const processing = await emulator.createRecording({ bytes: 5000, status: 'processing' });
    await fault({ kind: 'html_page', recording_sid: processing.recording_sid });
    const res = await get(processing.recording_sid!);
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), HTML_FAULT_PAGE);
    const after = await get(processing.recording_sid!);
    assert.equal(after.statusCode, 404);
    await after.body.arrayBuffer();
  });

  it('empty_body: 200 with Content-Length 0, typed as the media (or as content_type says)', async () => {
    await fault({ kind: 'empty_body', count: 2 });
    await fault({ kind: 'empty_body', content_type: 'application/octet-stream' });
    const mp3 = await get();
    assert.equal(mp3.statusCode, 200);
    assert.equal(mp3.headers['content-length'], '0');
    assert.equal(mp3.headers['content-type'], 'audio/mpeg');
    const body = Buffer.from(await mp3.body.arrayBuffer());
    assert.equal(body.length, 0);
    assert.deepEqual(sniffMedia(body), { kind: 'bad', reason: 'an empty body' });
    const wav = await get(undefined, undefined, '.wav');
    assert.equal(wav.headers['content-type'], 'audio/x-wav');
    assert.equal((await wav.body.arrayBuffer()).byteLength, 0);
    const untyped = await get();
    assert.equal(untyped.headers['content-type'], 'application/octet-stream');
    assert.equal((await untyped.body.arrayBuffer()).byteLength, 0);
    assert.deepEqual(emulator.stats().media_bytes, {}, 'no body bytes, no entry');
    assert.equal(emulator.stats().media_requests[recording.recording_sid!], 3);
  });

  it('short_body with omit_content_length: a clean close the client takes for the whole body', async () => {
    await fault({ kind: 'short_body', after_bytes: 50_050, omit_content_length: true });
    const res = await get();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], undefined);
    assert.equal(res.headers['transfer-encoding'], undefined);
    assert.equal(res.headers.connection, 'close');
    const chunks: Buffer[] = [];
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    assert.equal(body.length, 50_050, 'no error: the body just ends');
    assert.equal(walkFrames(body).kind, 'truncated', 'only the framing shows the cut');
    assert.equal(emulator.stats().media_bytes[recording.recording_sid!], 50_050);
  });

  it('omit_content_length with after_bytes past the end sends the whole media, close-delimited', async () => {
    await fault({ kind: 'short_body', after_bytes: 10 * SIZE, omit_content_length: true });
    const res = await get();
    assert.equal(res.headers['content-length'], undefined);
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(body.length, SIZE);
    assert.deepEqual(walkFrames(body), { kind: 'complete', format: 'mp3' });
  });

  it('html_page and empty_body with omit_content_length end by closing the connection', async () => {
    await fault({ kind: 'html_page', omit_content_length: true });
    await fault({ kind: 'empty_body', omit_content_length: true });
    const page = await get();
    assert.equal(page.headers['content-length'], undefined);
    assert.equal(await page.body.text(), HTML_FAULT_PAGE);
    const empty = await get();
    assert.equal(empty.headers['content-length'], undefined);
    assert.equal(empty.headers['transfer-encoding'], undefined);
    assert.equal((await empty.body.arrayBuffer()).byteLength, 0);
  });

  it('refuses content_type and omit_content_length where they do not apply, and bad values', async () => {
    const wrongKind = await rejected({ kind: 'http_500', content_type: 'audio/mpeg' });
    assert.equal(wrongKind.code, 'RECGATE_INVALID_REQUEST');
    assert.match(wrongKind.message, /^content_type: applies only to kinds html_page and empty_body$/);
    assert.match(
      (await rejected({ kind: 'short_body', content_type: 'text/html' })).message,
      /^content_type: /,
    );
    assert.match(
      (await rejected({ kind: 'rate_limit', omit_content_length: true })).message,
      /^omit_content_length: applies only to kinds/,
    );
    assert.match(
      (await rejected({ kind: 'html_page', content_type: 'text/html\r\nX-Injected: 1' })).message,
      /^content_type: must be printable ASCII$/,
    );
    assert.match((await rejected({ kind: 'html_page', content_type: '' })).message, /^content_type: /);
    assert.match(
      (await rejected({ kind: 'empty_body', omit_content_length: 'yes' })).message,
      /^omit_content_length: /,
    );
    assert.match((await rejected({ kind: 'html_page', status: 500 })).message, /status/);
    assert.match((await rejected({ kind: 'html' })).message, /^kind: /);
    assert.deepEqual(
      ((await (await control(emulator, 'faults')).json()) as { faults: unknown[] }).faults,
      [],
    );
  });

  it('counts only the bytes a client that went away actually got', async () => {
    emulator.setThrottle({ bandwidth: 100_000 });
    try {
      const controller = new AbortController();
      const res = await get(undefined, controller.signal);
      res.body.on('error', () => {});
      let received = 0;
      for await (const chunk of res.body) {
        received += (chunk as Buffer).length;
        if (received >= 10_000) break;
      }
      controller.abort();
      await sleep(200);
      const sent = emulator.stats().media_bytes[recording.recording_sid!]!;
      assert.ok(sent >= received && sent < SIZE, `${sent} bytes counted, ${received} received`);
      await sleep(200);
      assert.equal(emulator.stats().media_bytes[recording.recording_sid!], sent, 'no more after the close');
    } finally {
      emulator.setThrottle({ bandwidth: 0 });
    }
  });

  it('targets one recording when recording_sid is given; counts faulted requests', async () => {
    await fault({ kind: 'http_500', recording_sid: other.recording_sid });
    const mine = await get();
    assert.equal(mine.statusCode, 200);
    await mine.body.arrayBuffer();
    const theirs = await get(other.recording_sid!);
    assert.equal(theirs.statusCode, 500);
    await theirs.body.arrayBuffer();
    assert.deepEqual(emulator.stats().media_requests, {
      [recording.recording_sid!]: 1,
      [other.recording_sid!]: 1,
    });
  });

  it('reset forgets pending faults', async () => {
    await fault({ kind: 'http_500', count: 5 });
    const pending = (await (await control(emulator, 'faults')).json()) as { faults: unknown[] };
    assert.equal(pending.faults.length, 1);
    await (await fetch(`${emulator.url}/__emulator/reset`, { method: 'POST' })).arrayBuffer();
    const res = await get();
    assert.equal(res.statusCode, 200);
    await res.body.arrayBuffer();
  });

  it('addFault works programmatically', async () => {
    emulator.addFault({ kind: 'rate_limit', retry_after: 3 });
    const res = await get();
    assert.equal(res.statusCode, 429);
    assert.equal(res.headers['retry-after'], '3');
    await res.body.arrayBuffer();
  });
});

describe('emulator close', () => {
  it('does not wait for stalled or throttled responses', async () => {
    const emulator = await start({ bandwidth: 1000 });
    const created = await emulator.createRecording({ bytes: 50_000 });
    emulator.addFault({ kind: 'stall' });
    const url = accountUrl(emulator, `Recordings/${created.recording_sid}.mp3`);
    const headers = { authorization: basic(emulator.accountSid, emulator.authToken) };
    const stalled = await request(url, { headers });
    const slow = await request(url, { headers });
    const bodies = [stalled, slow].map((r) => r.body.arrayBuffer().catch((error: unknown) => error));
    const started = performance.now();
    await emulator.close();
    assert.ok(performance.now() - started < 2_000);
    const outcomes = await Promise.all(bodies);
    for (const outcome of outcomes) assert.ok(outcome instanceof Error);
  });

  it('a response waiting for its first byte does not keep the process alive after close', async () => {
    // A process (not this test runner, which other tests keep alive) with a response waiting 10 minutes
    // for its time to first byte must end by itself once the emulator is closed.
    const emulatorModule = new URL('../../src/emulator/index.ts', import.meta.url).href;
    const code = `
      import { startEmulator } from ${JSON.stringify(emulatorModule)};
      const emulator = await startEmulator({ port: 0, ttfbMs: 600000 });
      const created = await emulator.createRecording({ bytes: 10000 });
      const auth = Buffer.from(emulator.accountSid + ':' + emulator.authToken).toString('base64');
      const url = emulator.url + '/2010-04-01/Accounts/' + emulator.accountSid + '/Recordings/' + created.recording_sid + '.mp3';
      const waiting = fetch(url, { headers: { authorization: 'Basic ' + auth } }).catch(() => undefined);
      while (emulator.stats().total_media_requests === 0) await new Promise((r) => setTimeout(r, 10));
      await emulator.close();
      await waiting;
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const deadline = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const [status, signal] = (await once(child, 'exit')) as [number | null, string | null];
    clearTimeout(deadline);
    assert.equal(signal, null, 'the process ended by itself');
    assert.equal(status, 0);
  });
});
