/**
 * The benchmark's HTTP client: N concurrent keep-alive clients on one undici Agent, each making requests in
 * turn, recording per-request time to first body byte and to last byte, and checking every response's status
 * and length, and the bytes of a sample of responses (sha256 of full bodies, byte-for-byte for ranges).
 * Runs in the harness's process for smoke tests, or in its own process through {@link startLoadgen} so that
 * it does not share an event loop with the servers under test.
 *
 * On a machine shared with the servers, a client that waits for CPU measures its own wait: in bench:hosts' first
 * stampede, six recgate workers busy on two cores left this process about a quarter of a core, its event
 * loop stalled for up to 1.1 s at a time, and bytes sat unread in its sockets meanwhile (ss showed the
 * receive queues full while the servers had written them long before), which the run then counted as the
 * servers' first-byte time. Clients on a real deployment run on other machines: {@link startLoadgen} raises
 * the process's CPU priority, and every result reports the longest stall ({@link LoadResult.clientStallMs}).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
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
  /** Request `bytes=N-` (the rest of the resource from byte N, a 206 even from byte 0). */
  openRangeFrom?: number;
  /** Request the last N bytes: `bytes=-N`. */
  suffixBytes?: number;
  /** @default 'GET' (a HEAD expects no body) */
  method?: 'GET' | 'HEAD';
  /**
   * Resources to spread the requests over, instead of `path`/`size`/`sha256`: request `j` of client `i` asks
   * for `targets[(i + j × concurrency) % length]` (so N clients making turns go through the list once).
   */
  targets?: Array<{ path: string; size: number; sha256?: string }>;
  /**
   * When the upstream download reaches a byte, as a model: `ttfbMs + (byte + 1) / bytesPerS` after the request
   * starts. With it, {@link LoadResult.beyondMs} reports how long each response's last byte came after the
   * download reached it.
   */
  reach?: { ttfbMs: number; bytesPerS: number };
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
  /** Last byte after the modelled download reached it (see {@link LoadSpec.reach}), ms; only with `reach`. */
  beyondMs?: Summary;
  /**
   * The load generator's longest event-loop stall during the run, ms (how late a 10 ms timer ran): time in
   * which it read no response, so a first byte it timed may have waited for the client rather than the server.
   */
  clientStallMs: number;
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
  /** Last byte of the resource this response carries. */
  lastByte: number;
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
    spec.contentFile &&
    (spec.range ||
      spec.randomRangeBytes ||
      spec.openRangeFrom !== undefined ||
      spec.suffixBytes !== undefined)
      ? await readFile(spec.contentFile)
      : undefined;
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
  const stalls = monitorEventLoopDelay({ resolution: 10 });
  stalls.enable();
  const started = performance.now();
  const deadline = spec.durationMs !== undefined ? started + spec.durationMs : Number.POSITIVE_INFINITY;
  const perClient = spec.durationMs !== undefined ? Number.POSITIVE_INFINITY : (spec.requestsPerClient ?? 1);

  const origins = spec.origins ?? [spec.origin];
  const client = async (index: number) => {
    const origin = origins[index % origins.length]!;
    for (let i = 0; i < perClient && performance.now() < deadline; i++) {
      const target = spec.targets?.[(index + i * spec.concurrency) % spec.targets.length];
      const size = target?.size ?? spec.size;
      const sha256 = target === undefined ? spec.sha256 : target.sha256;
      let range: Shape['range'] = spec.range;
      if (spec.randomRangeBytes !== undefined) {
        const len = Math.min(spec.randomRangeBytes, size);
        const start = Math.floor(random() * (size - len + 1));
        range = { start, end: start + len - 1 };
      } else if (spec.openRangeFrom !== undefined) {
        range = { start: spec.openRangeFrom, end: size - 1, header: `bytes=${spec.openRangeFrom}-` };
      } else if (spec.suffixBytes !== undefined) {
        const len = Math.min(spec.suffixBytes, size);
        range = { start: size - len, end: size - 1, header: `bytes=-${spec.suffixBytes}` };
      }
      const head = spec.method === 'HEAD';
      const verify = !head && sampleLeft > 0 && (range ? content !== undefined : sha256 !== undefined);
      if (verify) sampleLeft--;
      const shape: Shape = { origin, path: target?.path ?? spec.path, size, sha256, range, head };
      outcomes.push(await one(agent, spec, shape, verify ? content : undefined, verify));
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, (_, i) => client(i)));
  const elapsedMs = performance.now() - started;
  stalls.disable();
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
    ...(spec.reach === undefined ? {} : { beyondMs: summarize(good.map((o) => beyond(o, spec.reach!))) }),
    clientStallMs: stalls.count > 0 ? stalls.max / 1e6 : 0,
  };
}

/** How long after the modelled download reached a response's last byte that byte arrived (negative: before). */
function beyond(o: Outcome, reach: NonNullable<LoadSpec['reach']>): number {
  return o.ttlb - (reach.ttfbMs + ((o.lastByte + 1) * 1000) / reach.bytesPerS);
}

/** One request: what to ask for and what to expect. */
interface Shape {
  origin: string;
  path: string;
  size: number;
  sha256: string | undefined;
  /** The inclusive range expected back; `header` when the request spells it otherwise (`bytes=N-`, `bytes=-N`). */
  range: { start: number; end: number; header?: string } | undefined;
  head: boolean;
}

function one(
  agent: Agent,
  spec: LoadSpec,
  shape: Shape,
  content: Buffer | undefined,
  verify: boolean,
): Promise<Outcome> {
  const { range, head } = shape;
  const headers: Record<string, string> = { ...spec.headers };
  if (range) headers.range = range.header ?? `bytes=${range.start}-${range.end}`;
  const expectStatus = range ? 206 : 200;
  const expectBytes = head ? 0 : range ? range.end - range.start + 1 : shape.size;
  const lastByte = head ? 0 : (range?.end ?? shape.size - 1);
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
        if (hash && hash.digest('hex') !== shape.sha256) mismatch = true;
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
          origin: shape.origin,
          ok: problem === undefined,
          ...(problem ? { error: problem } : {}),
          status,
          bytes,
          ttfb,
          ttlb,
          verified: verify,
          mismatch,
          lastByte,
        });
      },
      onResponseError(_controller, err) {
        resolve({
          origin: shape.origin,
          ok: false,
          error: `${err.name}: ${err.message}`,
          status,
          bytes,
          ttfb,
          ttlb: performance.now() - t0,
          verified: false,
          mismatch: false,
          lastByte,
        });
      },
    };
    agent.dispatch(
      { origin: shape.origin, path: shape.path, method: head ? 'HEAD' : 'GET', headers },
      handler,
    );
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
  /** The process's nice value: {@link LOADGEN_NICE}, or 0 where raising the priority is not allowed (not root). */
  readonly nice: number;
  run(spec: LoadSpec): Promise<LoadResult>;
  close(): Promise<void>;
}

const CHILD = fileURLToPath(new URL('./loadgen-child.ts', import.meta.url));

/** The load generator's nice value (negative: before other processes), where the user may raise it. */
export const LOADGEN_NICE = -10;

/** What a nice value of the load generator means, for a run's notes. */
export function loadgenPriorityNote(nice: number): string {
  return nice < 0
    ? `The load generator runs at nice ${nice}, ahead of the servers it measures, so that they do not starve it of CPU; each result reports its longest event-loop stall.`
    : 'The load generator runs at normal priority (raising it needs root or CAP_SYS_NICE): on a busy machine its first-byte times include its own waits for CPU; each result reports its longest event-loop stall.';
}

export async function startLoadgen(): Promise<LoadgenProcess> {
  const child: ChildProcess = fork(CHILD, [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  let nice = 0;
  try {
    setPriority(child.pid!, LOADGEN_NICE);
    nice = LOADGEN_NICE;
  } catch {
    // EACCES without the privilege: measured at normal priority, and the notes say so.
  }
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
    nice,
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
