/**
 * The soak: a mixed load on `recgate serve --workers N` against a throttled `recgate emulator`, for a set
 * time, checking every response. Cache hits, cold misses on recordings created as it goes, Range requests,
 * HEAD, If-None-Match, refused credentials and clients that walk away mid-body, from `concurrency` clients
 * at once. It passes when every response was exactly as planned (status, headers, body bytes), no worker
 * died, and recgate is still ready at the end.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { Agent, request } from 'undici';
import {
  BENCH_BUSINESS,
  BENCH_JWT_SECRET,
  type RecgatePeer,
  startEmulatorProcess,
  startRecgate,
} from '../bench/lib/peers.js';
import { type Summary, summarize } from '../bench/lib/stats.js';
import { JwtAuth } from '../src/auth/jwt.js';
import { DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, generateMp3 } from '../src/emulator/index.js';
import { between, seededRandom } from '../test/faults/seed.js';
import { freePort } from '../test/helpers/common.js';
import { send } from './client.js';
import {
  type Credentials,
  describeRequest,
  KINDS,
  type Kind,
  logUniform,
  pickKind,
  planRequest,
  type SoakRecording,
} from './requests.js';

export interface SoakOptions {
  /** How long clients keep starting requests, in seconds. @default 60 */
  durationS?: number;
  /** Clients requesting at once, each one request at a time. @default 16 */
  concurrency?: number;
  /** Seed of every random choice (recording SIDs and sizes, each client's kinds and ranges). @default 1 */
  seed?: number;
  /** `recgate serve --workers`. @default 2 */
  workers?: number;
  /** `dist` runs bin/recgate.js (built); `source` runs the TypeScript through tsx. @default 'dist' */
  entry?: 'dist' | 'source';
  /** Progress lines. @default none */
  log?: (line: string) => void;
}

/** The upstream's throttle: Twilio's media answers in a few hundred ms and streams at a few MB/s. */
export const UPSTREAM_TTFB_MS = 250;
export const UPSTREAM_BANDWIDTH = 4_000_000;
/** Recordings are 64 KB to 4 MB (about 16 s to 17 min at Twilio's 32 kbps), spread over orders of magnitude. */
export const MIN_RECORDING_BYTES = 64 * 1024;
export const MAX_RECORDING_BYTES = 4 * 1024 * 1024;
/** Recordings fetched once before the clock starts, so that cache hits have something to hit. */
export const WARM_RECORDINGS = 4;
/** A fresh recording is created every 250–750 ms, while fewer than this many wait for their first request. */
const FRESH_WAITING = 2;
/** Per request: longest wait for headers, and between body chunks. */
const REQUEST_TIMEOUT_MS = 30_000;
/** The kinds that reach a recording other than by starting its download (refused ones never do). */
export const REACHES_CACHE: ReadonlySet<Kind> = new Set([
  'hit',
  'range window',
  'range suffix',
  'range open-ended',
  'head',
  'if-none-match',
  'disconnect',
]);
/** Failures described in full; the rest are counted. */
const FAILURES_SHOWN = 20;

export interface KindStats {
  kind: Kind | 'all';
  requests: number;
  /**
   * Requests that reach the recording (not refused ones) sent while its first GET (a miss) was still
   * running: they joined its download in flight.
   */
  joined: number;
  failed: number;
  /** Body bytes received. */
  bytes: number;
  /** Over requests that passed, in ms. */
  ttfbMs: Summary;
  ttlbMs: Summary;
  /** Time to first byte of the requests that joined a download in flight, and of the others. */
  ttfbJoinedMs: Summary;
  ttfbFetchedMs: Summary;
  /** Passed requests per second of the run. */
  reqPerS: number;
  /** Body bytes per second of the run. */
  bytesPerS: number;
}

export interface SoakReport {
  options: Required<Omit<SoakOptions, 'log'>>;
  passed: boolean;
  /** Every reason the soak failed, each naming the request or the process; at most 20 requests in full. */
  failures: string[];
  failedRequests: number;
  /** From the first request to the last response, in seconds. */
  elapsedS: number;
  kinds: KindStats[];
  total: KindStats;
  /** Recordings created in the emulator, and those of them that clients asked for (the others waited for a miss). */
  recordings: { created: number; requested: number; requestedBytes: number };
  upstream: { ttfbMs: number; bandwidth: number; mediaRequests: number; mediaBytes: number };
  /** recgate's worker pids before and after the load; they differ when a worker died and was replaced. */
  workerPids: { before: number[]; after: number[] };
  /** Where it ran: everything (clients, recgate, the emulator, anything else) shares these cores. */
  machine: { cpu: string; cores: number; node: string; loadBefore: number; loadAfter: number };
}

interface Samples {
  requests: number;
  joined: number;
  failed: number;
  bytes: number;
  ttfb: number[];
  ttfbJoined: number[];
  ttfbFetched: number[];
  ttlb: number[];
}

export function validateSoakOptions(options: SoakOptions): Required<Omit<SoakOptions, 'log'>> {
  const resolved = {
    durationS: options.durationS ?? 60,
    concurrency: options.concurrency ?? 16,
    seed: options.seed ?? 1,
    workers: options.workers ?? 2,
    entry: options.entry ?? 'dist',
  };
  if (!(Number.isFinite(resolved.durationS) && resolved.durationS > 0)) {
    throw new TypeError('options.durationS must be a positive number of seconds');
  }
  for (const field of ['concurrency', 'workers'] as const) {
    if (!Number.isSafeInteger(resolved[field]) || resolved[field] < 1) {
      throw new TypeError(`options.${field} must be a positive integer`);
    }
  }
  if (!Number.isSafeInteger(resolved.seed) || resolved.seed < 0) {
    throw new TypeError('options.seed must be a non-negative integer');
  }
  if (resolved.entry !== 'dist' && resolved.entry !== 'source') {
    throw new TypeError("options.entry must be 'dist' or 'source'");
  }
  return resolved;
}

/** A Twilio SID of `prefix` and 32 hex digits drawn from `random`. */
function sid(prefix: string, random: () => number): string {
  let hex = '';
  while (hex.length < 32)
    hex += Math.floor(random() * 2 ** 32)
      .toString(16)
      .padStart(8, '0');
  return prefix + hex;
}

async function credentials(owner: string): Promise<Credentials> {
  const expired = await new SignJWT({ business_id: BENCH_BUSINESS })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
    .sign(new TextEncoder().encode(BENCH_JWT_SECRET));
  const otherSecret = await new JwtAuth('not-the-gateway-secret-'.padEnd(48, 'y')).sign(BENCH_BUSINESS, 3600);
  const token = owner.slice('Bearer '.length);
  const tampered = `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
  const unsigned = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(
    JSON.stringify({ business_id: BENCH_BUSINESS, exp: Math.floor(Date.now() / 1000) + 3600 }),
  ).toString('base64url')}.`;
  return {
    owner,
    otherBusiness: `Bearer ${await new JwtAuth(BENCH_JWT_SECRET).sign('soak-other-business', 6 * 3600)}`,
    bad: [
      `Bearer ${expired}`,
      `Bearer ${otherSecret}`,
      `Bearer ${tampered}`,
      `Bearer ${unsigned}`,
      'Bearer not-a-jwt',
      `Basic ${Buffer.from(`${BENCH_BUSINESS}:secret`).toString('base64')}`,
    ],
  };
}

export async function runSoak(options: SoakOptions = {}): Promise<SoakReport> {
  const resolved = validateSoakOptions(options);
  const log = options.log ?? (() => {});
  const { durationS, concurrency, seed, workers, entry } = resolved;
  const t0 = performance.now();
  const since = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

  // recgate asks the emulator nothing before the first request, so both start at once, and the warm-up
  // recordings are made (the MP3 generator's first call takes seconds, here and in the emulator) while
  // recgate is still starting.
  const upstream = {
    url: `http://127.0.0.1:${await freePort()}`,
    accountSid: DEFAULT_ACCOUNT_SID,
    authToken: DEFAULT_AUTH_TOKEN,
  };
  const producerRandom = seededRandom(seed, 'recordings');
  const emulatorStarting = startEmulatorProcess({
    entry,
    port: Number(new URL(upstream.url).port),
    ttfbMs: UPSTREAM_TTFB_MS,
    bandwidth: UPSTREAM_BANDWIDTH,
  });
  const [emulatorStart, recgateStart, warmStart] = await Promise.allSettled([
    emulatorStarting,
    startRecgate({ workers, upstream, entry, name: 'recgate' }),
    // One more than the warm-up fetches: the first cold miss's.
    emulatorStarting.then(() =>
      Promise.all(
        Array.from({ length: WARM_RECORDINGS + 1 }, () => createRecording(upstream.url, producerRandom)),
      ),
    ),
  ]);
  const emulator = emulatorStart.status === 'fulfilled' ? emulatorStart.value : undefined;
  const recgate = recgateStart.status === 'fulfilled' ? recgateStart.value : undefined;
  const agent = new Agent({
    connections: concurrency,
    pipelining: 1,
    headersTimeout: REQUEST_TIMEOUT_MS,
    bodyTimeout: REQUEST_TIMEOUT_MS,
    connectTimeout: REQUEST_TIMEOUT_MS,
  });
  try {
    for (const started of [emulatorStart, recgateStart, warmStart]) {
      if (started.status === 'rejected') throw started.reason;
    }
    const peer = recgate!;
    const pidsBefore = workerPids(peer);
    const creds = await credentials(peer.headers.authorization!);
    const failures: string[] = [];
    let failedRequests = 0;
    const fail = (line: string) => {
      failedRequests++;
      if (failedRequests <= FAILURES_SHOWN) failures.push(line);
      if (failedRequests <= 3) log(`soak: FAILED ${line}`);
    };
    const register = async (recording: SoakRecording): Promise<SoakRecording> => {
      await peer.prepare({
        call_sid: recording.callSid,
        recording_sid: recording.recordingSid,
        size: recording.size,
        sha256: recording.sha256,
      });
      return recording;
    };
    const made = warmStart.status === 'fulfilled' ? warmStart.value : [];
    const warm = made.slice(0, WARM_RECORDINGS);
    let created = made.length;

    // Recordings that were requested at least once (any kind may ask for them), and those fully fetched.
    const known: SoakRecording[] = [];
    const cached: SoakRecording[] = [];
    const cachedSids = new Set<string>();
    log(
      `soak: recgate (--workers ${workers}) and the emulator up after ${since()}; fetching ${warm.length} recordings`,
    );
    await Promise.all(
      warm.map(async (recording) => {
        await register(recording);
        known.push(recording);
        const plan = planRequest('miss', recording, producerRandom, creds);
        const outcome = await send(agent, peer.origin, plan);
        if (outcome.problem) fail(`warm-up ${describeRequest(plan)}: ${outcome.problem}`);
        else {
          cached.push(recording);
          cachedSids.add(recording.recordingSid);
        }
      }),
    );

    const samples = new Map<Kind, Samples>(
      KINDS.map((k) => [
        k,
        {
          requests: 0,
          joined: 0,
          failed: 0,
          bytes: 0,
          ttfb: [],
          ttfbJoined: [],
          ttfbFetched: [],
          ttlb: [],
        },
      ]),
    );
    const fresh: SoakRecording[] = await Promise.all(made.slice(WARM_RECORDINGS).map(register));
    log(`soak: ${warm.length} recordings cached after ${since()}; ${concurrency} clients for ${durationS} s`);
    const loadBefore = os.loadavg()[0]!;
    const started = performance.now();
    const deadline = started + durationS * 1000;
    let producerError: unknown;

    const producer = async () => {
      while (performance.now() < deadline) {
        if (fresh.length < FRESH_WAITING) {
          fresh.push(await register(await createRecording(upstream.url, producerRandom)));
          created++;
        }
        await new Promise((r) => setTimeout(r, between(producerRandom, 250, 750)));
      }
    };

    // Every kind runs, however short the soak: the clients' first requests go through the kinds in turn.
    const tour = Math.ceil(KINDS.length / concurrency);
    const client = async (index: number) => {
      const random = seededRandom(seed, `client ${index}`);
      for (let n = 0; performance.now() < deadline; n++) {
        const available = { fresh: fresh.length > 0, cached: cached.length > 0 };
        const turn = n < tour ? KINDS[index * tour + n] : undefined;
        const kind =
          turn !== undefined && (turn !== 'miss' || available.fresh) && (turn !== 'hit' || available.cached)
            ? turn
            : pickKind(random, available);
        let recording: SoakRecording;
        if (kind === 'miss') {
          recording = fresh.shift()!;
          known.push(recording);
        } else if (kind === 'hit') {
          recording = cached[between(random, 0, cached.length - 1)]!;
        } else {
          // Now and then the newest recording, which may still be downloading: requests join its flight.
          recording =
            random() < 0.3 ? known[known.length - 1]! : known[between(random, 0, known.length - 1)]!;
        }
        const plan = planRequest(kind, recording, random, creds);
        const joined = REACHES_CACHE.has(kind) && !cachedSids.has(recording.recordingSid);
        const outcome = await send(agent, peer.origin, plan);
        const s = samples.get(kind)!;
        s.requests++;
        if (joined) s.joined++;
        s.bytes += outcome.bytes;
        if (outcome.problem !== undefined) {
          s.failed++;
          fail(`${describeRequest(plan)}: ${outcome.problem}`);
          continue;
        }
        s.ttfb.push(outcome.ttfbMs);
        (joined ? s.ttfbJoined : s.ttfbFetched).push(outcome.ttfbMs);
        s.ttlb.push(outcome.ttlbMs);
        if (kind === 'miss') {
          cached.push(recording);
          cachedSids.add(recording.recordingSid);
        }
      }
    };

    const progress = setInterval(() => {
      let requests = 0;
      for (const s of samples.values()) requests += s.requests;
      const at = Math.round((performance.now() - started) / 1000);
      log(`soak: ${at} s, ${requests} requests, ${failedRequests} failed, ${created} recordings`);
    }, 10_000);
    try {
      await Promise.all([
        producer().catch((err: unknown) => {
          producerError = err;
        }),
        ...Array.from({ length: concurrency }, (_, i) => client(i)),
      ]);
    } finally {
      clearInterval(progress);
    }
    const elapsedS = (performance.now() - started) / 1000;
    if (producerError !== undefined) {
      failures.push(`creating recordings failed: ${errorText(producerError)}`);
    }

    const pidsAfter = workerPids(peer);
    const recgateLog = await readFile(path.join(peer.dataDir, 'recgate.log'), 'utf8').catch(() => '');
    failures.push(...workerProblems(pidsBefore, pidsAfter, recgateLog));
    const ready = await request(`${peer.origin}/readyz`).then(
      async (res) => {
        await res.body.dump();
        return res.statusCode;
      },
      (err: unknown) => errorText(err),
    );
    if (ready !== 200) failures.push(`recgate /readyz answered ${ready} after the load, expected 200`);
    const stats = await request(`${upstream.url}/__emulator/stats`).then(
      (res) => res.body.json() as Promise<EmulatorStats>,
    );
    failures.push(...upstreamProblems(known, fresh, stats));

    const kinds = KINDS.map((kind) => kindStats(kind, samples.get(kind)!, elapsedS));
    const all: Samples = {
      requests: 0,
      joined: 0,
      failed: 0,
      bytes: 0,
      ttfb: [],
      ttfbJoined: [],
      ttfbFetched: [],
      ttlb: [],
    };
    for (const s of samples.values()) {
      all.requests += s.requests;
      all.joined += s.joined;
      all.failed += s.failed;
      all.bytes += s.bytes;
      all.ttfb.push(...s.ttfb);
      all.ttfbJoined.push(...s.ttfbJoined);
      all.ttfbFetched.push(...s.ttfbFetched);
      all.ttlb.push(...s.ttlb);
    }
    if (failedRequests > FAILURES_SHOWN) {
      failures.push(`… and ${failedRequests - FAILURES_SHOWN} more failed requests`);
    }
    return {
      options: resolved,
      passed: failures.length === 0,
      failures,
      failedRequests,
      elapsedS,
      kinds,
      total: kindStats('all', all, elapsedS),
      recordings: {
        created,
        requested: known.length,
        requestedBytes: known.reduce((sum, r) => sum + r.size, 0),
      },
      upstream: {
        ttfbMs: UPSTREAM_TTFB_MS,
        bandwidth: UPSTREAM_BANDWIDTH,
        mediaRequests: stats.total_media_requests,
        mediaBytes: stats.total_media_bytes,
      },
      workerPids: { before: pidsBefore, after: pidsAfter },
      machine: {
        cpu: os.cpus()[0]?.model.trim() ?? 'unknown CPU',
        cores: os.availableParallelism(),
        node: process.versions.node,
        loadBefore,
        loadAfter: os.loadavg()[0]!,
      },
    };
  } finally {
    await agent.close().catch(() => {});
    await recgate?.stop();
    await emulator?.stop();
  }
}

/**
 * Creates a recording in the emulator, its SIDs and size drawn from `random`, and regenerates its bytes here:
 * the emulator's MP3 is a function of the recording SID and size, and comparing the two hashes keeps this
 * copy, which every range is checked against, in step with the emulator.
 */
async function createRecording(emulatorUrl: string, random: () => number): Promise<SoakRecording> {
  const bytes = logUniform(random, MIN_RECORDING_BYTES, MAX_RECORDING_BYTES);
  const body = { call_sid: sid('CA', random), recording_sid: sid('RE', random), bytes };
  const res = await request(`${emulatorUrl}/__emulator/recordings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = (await res.body.json()) as { size?: number; sha256?: string };
  if (res.statusCode !== 201 || answer.size !== bytes || typeof answer.sha256 !== 'string') {
    throw new Error(`the emulator refused a recording: ${res.statusCode} ${JSON.stringify(answer)}`);
  }
  const generated = generateMp3({ seed: body.recording_sid, bytes });
  if (generated.sha256 !== answer.sha256) {
    throw new Error(`regenerated ${body.recording_sid} differs from the emulator's recording`);
  }
  return {
    callSid: body.call_sid,
    recordingSid: body.recording_sid,
    size: bytes,
    sha256: answer.sha256,
    content: generated.data,
  };
}

/** recgate's serving processes (its workers; with `--workers 1`, the one process), sorted. */
function workerPids(peer: RecgatePeer): number[] {
  return peer.servingPids().sort((a, b) => a - b);
}

interface EmulatorStats {
  media_requests: Record<string, number>;
  total_media_requests: number;
  media_bytes: Record<string, number>;
  total_media_bytes: number;
}

/**
 * What the upstream's counters say went wrong: a requested recording must have been fetched (once in full,
 * plus seek-ahead slices within 10% of its size: README, "Seeking ahead of the download"), and one nobody
 * asked for must not have been fetched at all.
 */
export function upstreamProblems(
  requested: readonly Pick<SoakRecording, 'recordingSid' | 'size'>[],
  unrequested: readonly Pick<SoakRecording, 'recordingSid'>[],
  stats: Pick<EmulatorStats, 'media_requests' | 'media_bytes'>,
): string[] {
  const problems: string[] = [];
  for (const { recordingSid, size } of requested) {
    const bytes = stats.media_bytes[recordingSid] ?? 0;
    const limit = size + Math.floor(size * 0.1);
    if (bytes < size) {
      problems.push(
        `upstream sent ${bytes} bytes of ${recordingSid}, less than its ${size}: it was never fetched whole`,
      );
    } else if (bytes > limit) {
      problems.push(
        `upstream sent ${bytes} bytes of ${recordingSid} (${stats.media_requests[recordingSid] ?? 0} requests), more than 1.1× its ${size}`,
      );
    }
  }
  for (const { recordingSid } of unrequested) {
    const n = stats.media_requests[recordingSid] ?? 0;
    if (n > 0) problems.push(`recgate fetched ${recordingSid} ${n} times although no client asked for it`);
  }
  return problems;
}

function kindStats(kind: Kind | 'all', s: Samples, elapsedS: number): KindStats {
  return {
    kind,
    requests: s.requests,
    joined: s.joined,
    failed: s.failed,
    bytes: s.bytes,
    ttfbMs: summarize(s.ttfb),
    ttfbJoinedMs: summarize(s.ttfbJoined),
    ttfbFetchedMs: summarize(s.ttfbFetched),
    ttlbMs: summarize(s.ttlb),
    reqPerS: (s.requests - s.failed) / elapsedS,
    bytesPerS: s.bytes / elapsedS,
  };
}

/**
 * What says a worker died: a worker that served at the start and no longer does (the primary restarts a
 * dead worker under a new pid, and with the primary gone there are none), and the primary's `worker_exit`
 * and `primary_gave_up` lines in recgate's log.
 */
export function workerProblems(
  before: readonly number[],
  after: readonly number[],
  logText: string,
): string[] {
  const problems: string[] = [];
  const gone = before.filter((pid) => !after.includes(pid));
  if (gone.length > 0) {
    problems.push(
      `worker ${gone.join(', ')} is gone (crashed or killed): serving pids ${after.join(', ') || 'none'}, before the load ${before.join(', ')}`,
    );
  }
  for (const line of logText.split('\n')) {
    if (!line.startsWith('{')) continue;
    let entry: { event?: unknown };
    try {
      entry = JSON.parse(line) as { event?: unknown };
    } catch {
      continue;
    }
    if (entry.event === 'worker_exit' || entry.event === 'primary_gave_up')
      problems.push(`recgate logged ${line}`);
  }
  return problems;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
