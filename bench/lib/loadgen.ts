/**
 * The benchmark's HTTP client: N concurrent keep-alive clients on one undici Agent, each making requests in
 * turn, recording per-request time to first body byte and to last byte, and checking every response's status
 * and length, and the bytes of a sample of responses (sha256 of full bodies, byte-for-byte for ranges).
 * Runs in the harness's process for smoke tests, or in its own process through {@link startLoadgen} so that
 * it does not share an event loop with the servers under test.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Agent, type Dispatcher } from 'undici';
import { type Summary, summarize } from './stats.js';

export interface LoadSpec {
  /** e.g. `http://127.0.0.1:8080` */
  origin: string;
  /**
   * Spread the clients over these origins instead (client k uses `origins[k % n]`), as a load balancer in
   * front of several hosts would; the result then has {@link LoadResult.ttfbByOrigin}.
   */
  origins?: string[];
  /** Request path, the same for every request. */
  path: string;
  headers?: Record<string, string>;
  /** Concurrent clients, each on its own connection. */
  concurrency: number;
  /** Requests each client makes in turn; ignored when `durationMs` is set. @default 1 */
  requestsPerClient?: number;
  /** Keep every client requesting until this many ms have passed, instead of a fixed count. */
  durationMs?: number;
  /** Request this inclusive byte range. */
  range?: { start: number; end: number };
  /** Request a random window of this many bytes each time (deterministic sequence per run). */
  randomRangeBytes?: number;
  /** Size of the full resource in bytes. */
  size: number;
  /** sha256 (hex) of the full resource: sampled full bodies are hashed against it. */
  sha256?: string;
  /** A local copy of the full resource: sampled range bodies are compared with it byte for byte. */
  contentFile?: string;
  /** How many responses get their bytes checked; every response's status and length are checked. @default 10 */
  verifySample?: number;
  /** Per request: max wait for headers and between body chunks, in ms. @default 120000 */
  timeoutMs?: number;
}

export interface LoadResult {
  requests: number;
  ok: number;
  failed: number;
  /** The first few distinct failure descriptions. */
  errors: string[];
  statuses: Record<string, number>;
  /** Responses whose bytes were checked, and how many of those did not match. */
  verified: number;
  mismatched: number;
  bytes: number;
  elapsedMs: number;
  /** Request start to the first body byte, in ms, over successful responses. */
  ttfbMs: Summary;
  /** Request start to the last body byte, in ms, over successful responses. */
  ttlbMs: Summary;
  /** With {@link LoadSpec.origins}: time to first byte per origin, over successful responses. */
  ttfbByOrigin?: Record<string, Summary>;
  reqPerS: number;
  bytesPerS: number;
}

interface Outcome {
  origin: string;
  ok: boolean;
  error?: string;
  status: number;
  bytes: number;
  ttfb: number;
  ttlb: number;
  verified: boolean;
  mismatch: boolean;
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  validate(spec);
  const timeoutMs = spec.timeoutMs ?? 120_000;
  const agent = new Agent({
    connections: spec.concurrency,
    pipelining: 1,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 60_000,
    connectTimeout: 30_000,
  });
  const content =
    spec.contentFile && (spec.range || spec.randomRangeBytes) ? await readFile(spec.contentFile) : undefined;
  let sampleLeft = spec.verifySample ?? 10;
  let rng = 0x9e3779b9;
  const random = () => {
    // mulberry32: the same range sequence for every peer in a run
    rng = (rng + 0x6d2b79f5) | 0;
    let t = Math.imul(rng ^ (rng >>> 15), 1 | rng);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const outcomes: Outcome[] = [];
  const started = performance.now();
  const deadline = spec.durationMs !== undefined ? started + spec.durationMs : Number.POSITIVE_INFINITY;
  const perClient = spec.durationMs !== undefined ? Number.POSITIVE_INFINITY : (spec.requestsPerClient ?? 1);

  const origins = spec.origins ?? [spec.origin];
  const client = async (k: number) => {
    const origin = origins[k % origins.length]!;
    for (let i = 0; i < perClient && performance.now() < deadline; i++) {
      let range = spec.range;
      if (spec.randomRangeBytes !== undefined) {
        const len = Math.min(spec.randomRangeBytes, spec.size);
        const start = Math.floor(random() * (spec.size - len + 1));
        range = { start, end: start + len - 1 };
      }
      const verify = sampleLeft > 0 && (range ? content !== undefined : spec.sha256 !== undefined);
      if (verify) sampleLeft--;
      outcomes.push(await one(agent, spec, origin, range, verify ? content : undefined, verify));
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, (_, k) => client(k)));
  const elapsedMs = performance.now() - started;
  await agent.close();

  const good = outcomes.filter((o) => o.ok);
  const statuses: Record<string, number> = {};
  const errors = new Set<string>();
  for (const o of outcomes) {
    statuses[String(o.status)] = (statuses[String(o.status)] ?? 0) + 1;
    if (o.error && errors.size < 5) errors.add(o.error);
  }
  const bytes = outcomes.reduce((a, o) => a + o.bytes, 0);
  return {
    requests: outcomes.length,
    ok: good.length,
    failed: outcomes.length - good.length,
    errors: [...errors],
    statuses,
    verified: outcomes.filter((o) => o.verified).length,
    mismatched: outcomes.filter((o) => o.mismatch).length,
    bytes,
    elapsedMs,
    ttfbMs: summarize(good.map((o) => o.ttfb)),
    ttlbMs: summarize(good.map((o) => o.ttlb)),
    ...(spec.origins
      ? {
          ttfbByOrigin: Object.fromEntries(
            spec.origins.map((o) => [o, summarize(good.filter((g) => g.origin === o).map((g) => g.ttfb))]),
          ),
        }
      : {}),
    reqPerS: good.length / (elapsedMs / 1000),
    bytesPerS: bytes / (elapsedMs / 1000),
  };
}

function one(
  agent: Agent,
  spec: LoadSpec,
  origin: string,
  range: { start: number; end: number } | undefined,
  content: Buffer | undefined,
  verify: boolean,
): Promise<Outcome> {
  const headers: Record<string, string> = { ...spec.headers };
  if (range) headers.range = `bytes=${range.start}-${range.end}`;
  const expectStatus = range ? 206 : 200;
  const expectBytes = range ? range.end - range.start + 1 : spec.size;
  return new Promise<Outcome>((resolve) => {
    const t0 = performance.now();
    let status = 0;
    let bytes = 0;
    let ttfb = Number.NaN;
    let hash: Hash | undefined;
    let offset = range?.start ?? 0;
    let mismatch = false;
    const handler: Dispatcher.DispatchHandler = {
      // Its presence selects undici's controller-style handler API.
      onRequestStart() {},
      onResponseStart(_controller, statusCode) {
        status = statusCode;
        if (verify && !range) hash = createHash('sha256');
      },
      onResponseData(_controller, chunk) {
        if (bytes === 0) ttfb = performance.now() - t0;
        bytes += chunk.length;
        if (!verify || status !== expectStatus) return;
        if (hash) hash.update(chunk);
        else if (content && !mismatch) {
          if (!chunk.equals(content.subarray(offset, offset + chunk.length))) mismatch = true;
          offset += chunk.length;
        }
      },
      onResponseEnd() {
        const ttlb = performance.now() - t0;
        if (hash && hash.digest('hex') !== spec.sha256) mismatch = true;
        if (bytes === 0) ttfb = ttlb;
        const problem =
          status !== expectStatus
            ? `status ${status}, expected ${expectStatus}`
            : bytes !== expectBytes
              ? `${bytes} body bytes, expected ${expectBytes}`
              : mismatch
                ? 'body bytes differ from the original'
                : undefined;
        resolve({
          origin,
          ok: problem === undefined,
          ...(problem ? { error: problem } : {}),
          status,
          bytes,
          ttfb,
          ttlb,
          verified: verify,
          mismatch,
        });
      },
      onResponseError(_controller, err) {
        resolve({
          origin,
          ok: false,
          error: `${err.name}: ${err.message}`,
          status,
          bytes,
          ttfb,
          ttlb: performance.now() - t0,
          verified: false,
          mismatch: false,
        });
      },
    };
    agent.dispatch({ origin, path: spec.path, method: 'GET', headers }, handler);
  });
}

function validate(spec: LoadSpec): void {
  if (!Number.isInteger(spec.concurrency) || spec.concurrency < 1) {
    throw new TypeError('spec.concurrency must be a positive integer');
  }
  if (spec.origins !== undefined && spec.origins.length === 0) {
    throw new TypeError('spec.origins must name at least one origin');
  }
  if (!Number.isInteger(spec.size) || spec.size < 1)
    throw new TypeError('spec.size must be a positive integer');
  if (spec.durationMs !== undefined && !(spec.durationMs > 0)) {
    throw new TypeError('spec.durationMs must be a positive number');
  }
  if (
    spec.range &&
    !(spec.range.start >= 0 && spec.range.end >= spec.range.start && spec.range.end < spec.size)
  ) {
    throw new TypeError('spec.range must lie within the resource');
  }
}

/** A load generator in its own process; {@link LoadgenProcess.run} sends a spec and resolves with the result. */
export interface LoadgenProcess {
  readonly pid: number;
  run(spec: LoadSpec): Promise<LoadResult>;
  close(): Promise<void>;
}

const CHILD = fileURLToPath(new URL('./loadgen-child.ts', import.meta.url));

export async function startLoadgen(): Promise<LoadgenProcess> {
  const child: ChildProcess = fork(CHILD, [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  let nextId = 1;
  const pending = new Map<number, { resolve: (r: LoadResult) => void; reject: (e: Error) => void }>();
  child.on('message', (msg: { id: number; result?: LoadResult; error?: string }) => {
    const waiter = pending.get(msg.id);
    if (!waiter) return;
    pending.delete(msg.id);
    if (msg.error !== undefined) waiter.reject(new Error(`load generator: ${msg.error}`));
    else waiter.resolve(msg.result!);
  });
  child.on('exit', (code) => {
    for (const w of pending.values()) w.reject(new Error(`load generator exited (${code})`));
    pending.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('error', reject);
  });
  return {
    pid: child.pid!,
    run(spec) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, spec });
      });
    },
    async close() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
