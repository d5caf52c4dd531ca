/**
 * Test doubles and tools for the recording cache: an in-process fake upstream with exact control over
 * timing and failures, a tiny HTTP media server (countable across processes) with a minimal `fetchMedia`
 * adapter for child processes, a log capture, and child-process plumbing.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { createError } from '../../src/errors.js';
import { metadataSync, runQueueWaitMs, SLOW_SYNC_MS } from '../../src/io/sync-guard.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { createRecordingCache, type RecordingCacheOptions } from '../../src/recordings/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import type {
  MediaHead,
  MediaRequest,
  MediaResponse,
  Upstream,
  UpstreamRecording,
} from '../../src/upstream/upstream.js';

import { hex32 } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { finishedNames, settledFiles } from '../helpers/recordings.js';

export { hex32, readAll, sha256, tempDir } from '../helpers/common.js';

export const HERE = dirname(fileURLToPath(import.meta.url));

export function newRef(): RecordingRef {
  return { ownerCallSid: `CA${hex32()}` as CallSid, recordingSid: `RE${hex32()}` as RecordingSid };
}

/** Bytes of one MPEG-1 Layer III frame at 128 kbit/s and 44.1 kHz, without padding. */
export const MP3_FRAME_BYTES = 417;

/**
 * `size` bytes that frame as MP3 (what the cache checks before it keeps a download): 417-byte MPEG-1 Layer
 * III frames with random payloads, the last one cut short unless `size` is a multiple of
 * {@link MP3_FRAME_BYTES}.
 */
export function audioBytes(size: number): Buffer {
  const data = randomBytes(size);
  for (let at = 0; at < size; at += MP3_FRAME_BYTES) {
    Buffer.from([0xff, 0xfb, 0x90, 0x00]).copy(data, at, 0, Math.min(4, size - at));
  }
  return data;
}

/** What a finished recording leaves in the recordings directory: the file and its identity record. */
export function finishedFiles(ref: RecordingRef): string[] {
  return finishedNames(ref.ownerCallSid);
}

/** Waits until the recording is committed and nothing else of it is left (see {@link settledFiles}). */
export async function settled(dir: string, ref: RecordingRef, timeoutMs = 10_000): Promise<void> {
  await settledFiles(dir, ref.ownerCallSid, { timeoutMs });
}

/** The current generation's file of a recording (per its sidecar), or `undefined` when there is none. */
export function partPath(dir: string, ref: RecordingRef): string | undefined {
  try {
    const meta = JSON.parse(readFileSync(join(dir, `.${ref.ownerCallSid}.mp3.meta`), 'utf8'));
    return join(dir, `.${ref.ownerCallSid}.mp3.${meta.fileId}.part`);
  } catch {
    return undefined;
  }
}

/** The files of one recording in the directory, sorted. */
export function ownFiles(dir: string, ref: RecordingRef): string[] {
  return readdirSync(dir)
    .filter((n) => n.includes(ref.ownerCallSid))
    .sort();
}

export interface FakeUpstreamOptions {
  data: Buffer;
  /** Delay before fetchMedia resolves. */
  ttfbMs?: number;
  chunkSize?: number;
  /** Delay before each chunk. */
  chunkDelayMs?: number;
  acceptsRanges?: boolean;
  etag?: string | null;
  lastModified?: string | null;
  /** The body errors once it reaches this absolute offset, for the first `failCalls` calls. */
  failAt?: number;
  failCalls?: number;
  /** What the body errors with at `failAt`. @default an ECONNRESET Error */
  failWith?: () => Error;
  /**
   * The connection closes cleanly at this absolute offset, on every call. As from TwilioClient, the body
   * then errors (RECGATE_UPSTREAM_UNAVAILABLE) when Content-Length promised more, and ends quietly only
   * without Content-Length (`noLength`), where nobody can tell a short body from a whole one.
   */
  shortAt?: number;
  /** fetchMedia itself rejects with this. */
  headersError?: Error;
  /** Omit Content-Length (size unknown until the end). */
  noLength?: boolean;
  /** Advertise ranges but answer every request with the whole body (200), as a Range-ignoring upstream. */
  ignoreRange?: boolean;
  /** Ranged (206) responses carry this ETag instead and ignore If-Range, as a misbehaving cache in between. */
  rangeEtag?: string;
  /** The Content-Type answered. @default 'audio/mpeg' */
  contentType?: string | null;
}

/**
 * An in-process {@link Upstream} serving one Buffer, counting calls and the ranges asked for. It passes the
 * fetchMedia part of the Upstream contract (test/upstream/contract.ts).
 */
export class FakeUpstream implements Pick<Upstream, 'fetchMedia' | 'headMedia'> {
  readonly calls: MediaRequest[] = [];
  /** HEAD requests answered. */
  heads = 0;
  options: FakeUpstreamOptions;
  /** Bodies whose stream has been created, ended or not. */
  bodiesStarted = 0;
  /** Body bytes handed out, all requests. */
  bytesSent = 0;
  /** Bodies being streamed now, and the most at once. */
  activeBodies = 0;
  maxActiveRanged = 0;
  #activeRanged = 0;

  constructor(options: FakeUpstreamOptions) {
    this.options = options;
  }

  async headMedia(_sid: RecordingSid, signal?: AbortSignal): Promise<MediaHead> {
    const o = this.options;
    this.heads++;
    signal?.throwIfAborted();
    if (o.ttfbMs) await sleep(o.ttfbMs, undefined, { signal });
    if (o.headersError) throw o.headersError;
    return {
      size: o.noLength ? null : o.data.length,
      etag: o.etag === undefined ? '"up-1"' : o.etag,
      lastModified: o.lastModified ?? null,
      contentType: o.contentType === undefined ? 'audio/mpeg' : o.contentType,
      acceptsRanges: o.acceptsRanges ?? true,
    };
  }

  async fetchMedia(_sid: RecordingSid, req: MediaRequest = {}): Promise<MediaResponse> {
    const o = this.options;
    const call = this.calls.length;
    this.calls.push(req);
    req.signal?.throwIfAborted();
    if (o.ttfbMs) await sleep(o.ttfbMs, undefined, { signal: req.signal });
    if (o.headersError) throw o.headersError;
    const acceptsRanges = o.acceptsRanges ?? true;
    const etag = o.etag === undefined ? '"up-1"' : o.etag;
    const size = o.data.length;
    let start = 0;
    let stopAt = size;
    let status: 200 | 206 = 200;
    const ifRangeOk = req.ifRange === undefined || req.ifRange === etag || o.rangeEtag !== undefined;
    if (req.start !== undefined && acceptsRanges && !o.ignoreRange && ifRangeOk) {
      start = req.start;
      if (req.end !== undefined) stopAt = Math.min(size, req.end + 1);
      status = 206;
    }
    const ranged = status === 206;
    const failAt =
      o.failAt !== undefined && call < (o.failCalls ?? Number.POSITIVE_INFINITY) ? o.failAt : undefined;
    const chunkSize = o.chunkSize ?? 16 * 1024;
    const delay = o.chunkDelayMs ?? 0;
    const data = o.data;
    const signal = req.signal;
    this.bodiesStarted++;
    const self = this;
    this.activeBodies++;
    if (ranged) {
      this.#activeRanged++;
      this.maxActiveRanged = Math.max(this.maxActiveRanged, this.#activeRanged);
    }
    async function* body(): AsyncGenerator<Buffer> {
      let pos = start;
      while (pos < stopAt) {
        if (delay) await sleep(delay, undefined, { signal });
        const stop = Math.min(stopAt, pos + chunkSize, failAt ?? size, o.shortAt ?? size);
        if (stop > pos) {
          self.bytesSent += stop - pos;
          yield data.subarray(pos, stop);
        }
        pos = stop;
        if (failAt !== undefined && pos >= failAt)
          throw o.failWith?.() ?? Object.assign(new Error('socket reset'), { code: 'ECONNRESET' });
        if (o.shortAt !== undefined && pos >= o.shortAt) {
          if (o.noLength) return;
          throw createError('RECGATE_UPSTREAM_UNAVAILABLE', {
            message: `The recording download from the provider ended after ${pos - start} of ${stopAt - start} bytes`,
          });
        }
      }
    }
    const stream = Readable.from(body(), { objectMode: false });
    // As the real upstream's body does (upstream/media.ts, guardBody): an error before anyone reads (the
    // download makes its files between the headers and the first read) stays for the reader, and crashes
    // nothing.
    stream.on('error', () => {});
    const onAbort = () => stream.destroy(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.once('close', () => {
      signal?.removeEventListener('abort', onAbort);
      this.activeBodies--;
      if (ranged) this.#activeRanged--;
    });
    return {
      status,
      contentLength: o.noLength ? null : stopAt - start,
      start,
      totalSize: o.noLength ? null : size,
      etag: ranged && o.rangeEtag !== undefined ? o.rangeEtag : etag,
      lastModified: o.lastModified === undefined ? 'Tue, 01 Apr 2025 10:00:00 GMT' : o.lastModified,
      contentType: o.contentType === undefined ? 'audio/mpeg' : o.contentType,
      acceptsRanges,
      body: stream,
    };
  }
}

export interface MediaServerOptions {
  data: Buffer;
  chunkSize?: number;
  chunkDelayMs?: number;
  acceptsRanges?: boolean;
  etag?: string;
  /** Delay before the response headers. @default 0 */
  headersDelayMs?: number;
  /**
   * Every response's connection breaks once its body reaches this absolute offset: by a reset, or by a
   * clean close (FIN) before Content-Length. @default never
   */
  breakAt?: { offset: number; how: 'reset' | 'close' };
}

export interface MediaServer {
  url: string;
  /** The Range header of every request (`null` without one). */
  ranges: Array<string | null>;
  /** Body bytes written to sockets so far. */
  bytesSent(): number;
  close(): Promise<void>;
}

/** An HTTP server for one recording's bytes, paced, counting requests: countable from any process. */
export async function startMediaServer(options: MediaServerOptions): Promise<MediaServer> {
  const { data } = options;
  const chunkSize = options.chunkSize ?? 16 * 1024;
  const delay = options.chunkDelayMs ?? 0;
  const acceptsRanges = options.acceptsRanges ?? true;
  const etag = options.etag ?? '"media-1"';
  const headersDelayMs = options.headersDelayMs ?? 0;
  const breakAt = options.breakAt;
  const ranges: Array<string | null> = [];
  let sent = 0;
  const server: Server = createServer((req, res) => {
    const range = req.headers.range ?? null;
    ranges.push(range);
    let start = 0;
    let end = data.length - 1;
    let ranged = false;
    const match = range === null ? null : /^bytes=(\d+)-(\d*)$/.exec(range);
    const ifRange = req.headers['if-range'];
    if (acceptsRanges && match && (ifRange === undefined || ifRange === etag)) {
      ranged = true;
      start = Number(match[1]);
      if (match[2] !== '') end = Math.min(end, Number(match[2]));
    }
    const headers: Record<string, string> = {
      'content-type': 'audio/mpeg',
      'content-length': String(end + 1 - start),
      etag,
      'last-modified': 'Tue, 01 Apr 2025 10:00:00 GMT',
    };
    if (acceptsRanges) headers['accept-ranges'] = 'bytes';
    if (ranged) headers['content-range'] = `bytes ${start}-${end}/${data.length}`;
    if (req.method === 'HEAD') {
      res.writeHead(200, headers);
      res.end();
      return;
    }
    let pos = start;
    const pump = () => {
      if (res.destroyed) return;
      if (breakAt !== undefined && pos >= breakAt.offset && pos <= end) {
        // Once what was written has left Node's buffers, so that the break does not swallow it.
        res.write('', () => (breakAt.how === 'reset' ? res.socket?.resetAndDestroy() : res.socket?.end()));
        return;
      }
      if (pos > end) {
        res.end();
        return;
      }
      const breakOffset = breakAt !== undefined && breakAt.offset > pos ? breakAt.offset : end + 1;
      const stop = Math.min(end + 1, pos + chunkSize, breakOffset);
      const ok = res.write(data.subarray(pos, stop));
      sent += stop - pos;
      pos = stop;
      const next = () => setTimeout(pump, delay);
      if (ok) next();
      else res.once('drain', next);
    };
    const respond = () => {
      res.writeHead(ranged ? 206 : 200, headers);
      pump();
    };
    if (headersDelayMs > 0) {
      const timer = setTimeout(respond, headersDelayMs);
      res.once('close', () => clearTimeout(timer));
    } else {
      respond();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/media`,
    ranges,
    bytesSent: () => sent,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A minimal `fetchMedia` and `headMedia` over HTTP for {@link startMediaServer}, as a child process uses it. */
export function httpUpstream(url: string): Pick<Upstream, 'fetchMedia' | 'headMedia'> {
  return {
    async headMedia(_sid: RecordingSid, signal?: AbortSignal): Promise<MediaHead> {
      const res = await request(url, { method: 'HEAD', signal });
      await res.body.dump();
      if (res.statusCode !== 200) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: new Error(`status ${res.statusCode}`) });
      }
      const header = (name: string) => {
        const v = res.headers[name];
        return typeof v === 'string' ? v : null;
      };
      return {
        size: header('content-length') === null ? null : Number(header('content-length')),
        etag: header('etag'),
        lastModified: header('last-modified'),
        contentType: header('content-type'),
        acceptsRanges: header('accept-ranges') === 'bytes',
      };
    },
    async fetchMedia(_sid: RecordingSid, req: MediaRequest = {}): Promise<MediaResponse> {
      const headers: Record<string, string> = {};
      if (req.start !== undefined) {
        headers.range = `bytes=${req.start}-${req.end ?? ''}`;
        if (req.ifRange !== undefined) headers['if-range'] = req.ifRange;
      }
      const res = await request(url, { headers, signal: req.signal });
      if (res.statusCode !== 200 && res.statusCode !== 206) {
        throw createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause: new Error(`status ${res.statusCode}`) });
      }
      const header = (name: string) => {
        const v = res.headers[name];
        return typeof v === 'string' ? v : null;
      };
      const contentLength = header('content-length') === null ? null : Number(header('content-length'));
      const cr = /^bytes (\d+)-\d+\/(\d+)$/.exec(header('content-range') ?? '');
      return {
        status: res.statusCode === 206 ? 206 : 200,
        contentLength,
        start: cr ? Number(cr[1]) : 0,
        totalSize: cr ? Number(cr[2]) : contentLength,
        etag: header('etag'),
        lastModified: header('last-modified'),
        contentType: header('content-type'),
        acceptsRanges: res.statusCode === 206 || header('accept-ranges') === 'bytes',
        body: res.body,
      };
    },
  };
}

/** A child process speaking JSON lines on stdout; `next(type)` waits for a message of that type. */
export class Child {
  readonly proc: ChildProcess;
  readonly messages: Array<Record<string, unknown>> = [];
  readonly exited: Promise<number | null>;
  #waiters: Array<() => void> = [];
  #stderr = '';

  constructor(script: string, config: unknown) {
    this.proc = spawn(
      process.execPath,
      ['--import', 'tsx', join(HERE, 'fixtures', script), JSON.stringify(config)],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let buffer = '';
    this.proc.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      let nl = buffer.indexOf('\n');
      while (nl >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.startsWith('{')) this.messages.push(JSON.parse(line));
        nl = buffer.indexOf('\n');
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    this.proc.stderr!.on('data', (chunk: Buffer) => {
      this.#stderr += chunk.toString('utf8');
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.exited.then(() => {
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  send(message: unknown): void {
    this.proc.stdin!.write(`${JSON.stringify(message)}\n`);
  }

  async next(type: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((m) => m.type === type);
      if (found) return found;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`child exited before "${type}": ${this.#stderr}`);
      }
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for "${type}" from child: ${this.#stderr}`);
      await Promise.race([new Promise<void>((r) => this.#waiters.push(r)), sleep(100)]);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}

/**
 * A cache on `dir` for tests: fast polling, a 5 s lock timeout (override in `extra`), captured logs and a
 * record of its events; closed after the test.
 */
export function makeCache(
  t: { after(fn: () => void | Promise<void>): void },
  dir: string,
  upstream: Pick<Upstream, 'fetchMedia'>,
  extra: Partial<RecordingCacheOptions> = {},
) {
  const capture = captureLogs({ plain: true });
  const events: Array<[string, Record<string, unknown>]> = [];
  const cache = createRecordingCache({
    dir,
    upstream,
    logger: capture.logger,
    pollIntervalMs: 5,
    lockTimeoutMs: 5000,
    onEvent: ({ event, ...fields }) => events.push([event, fields]),
    ...extra,
  });
  t.after(() => cache.close());
  return {
    cache,
    capture,
    events,
    names: () => events.map((e) => e[0]),
    named: (name: string) => events.filter((e) => e[0] === name).map((e) => e[1]),
  };
}

/** A response read to its end, or to where it was cut. */
export interface Outcome {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The body ended cleanly (not cut). */
  whole: boolean;
}

/** `method` on `url` with `headers`, its body read to its end or to where it broke off. */
export async function requestOutcome(
  url: string,
  headers: Record<string, string>,
  method = 'GET',
): Promise<Outcome> {
  const res = await request(url, { method: method as 'GET', headers });
  const chunks: Buffer[] = [];
  let whole = true;
  try {
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
  } catch {
    whole = false;
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), whole };
}

/** The recording resource of `sid` as Twilio answers it, with `encryptionDetails` (its `encryption_details`). */
export function encryptedResource(sid: RecordingSid, encryptionDetails: unknown): UpstreamRecording {
  return {
    sid,
    callSid: `CA${'0'.repeat(32)}` as CallSid,
    status: 'completed',
    durationS: 1,
    dateCreated: null,
    encryptionDetails,
  };
}

/**
 * Three slow synchronous calls: the process's guard then sends the store's and the lock's small file-system
 * calls to the thread pool for 10 s, as after a slow disk (see `io/sync-guard.ts`).
 */
export function syncCallsOff(): void {
  for (let i = 0; i < 3; i++) {
    metadataSync.time(() => {
      // Slow by the thread's own time, not by waits for a CPU (which the guard leaves out) on a busy machine.
      const started = performance.now();
      const waited = runQueueWaitMs() ?? 0;
      while (performance.now() - started - ((runQueueWaitMs() ?? 0) - waited) <= SLOW_SYNC_MS + 1);
    });
  }
  assert.equal(metadataSync.on, false);
}
