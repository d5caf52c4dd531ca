/**
 * Scenario 3, warm throughput: a cached 5 MB recording, keep-alive clients at several concurrencies, full GETs
 * (GB/s) and random 64 KB Range requests (requests/s, p99 latency). recgate runs with JWT auth on and one
 * worker; the peers are nginx serving the same file statically (one worker) and @fastify/static.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type BenchContext, MB, newRecording, sizeLabel, writeRecordingFile } from '../lib/context.js';
import {
  FASTIFY_FLOOR,
  forEachPeer,
  NGINX_PEER_NAMES,
  type Peer,
  type PeerStarter,
  type Recording,
  startFastifyFloor,
  startFastifyStatic,
  startNginx,
} from '../lib/peers.js';
import { readCpuSeconds } from '../lib/procfs.js';
import type { ChartPanel, ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs, fmtNum, ratio } from '../lib/stats.js';
import { runWrk } from '../lib/wrk.js';

export interface ThroughputSample {
  reqPerS: number;
  bytesPerS: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  requests: number;
  /** Server CPU time over wall time (1.0 = one core busy). */
  serverCpu: number;
}

export interface WarmParams {
  size: number;
  rangeBytes: number;
  fullConcurrency: number[];
  rangeConcurrency: number[];
  durationS: number;
  warmupS: number;
}

function params(ctx: BenchContext): WarmParams {
  if (ctx.mode === 'smoke') {
    return {
      size: 300_000,
      rangeBytes: 16_384,
      fullConcurrency: [4],
      rangeConcurrency: [4],
      durationS: 1,
      warmupS: 0,
    };
  }
  if (ctx.mode === 'full') {
    return {
      size: 5 * MB,
      rangeBytes: 65_536,
      fullConcurrency: [1, 16, 64, 256],
      rangeConcurrency: [1, 16, 64, 256],
      durationS: 10,
      warmupS: 2,
    };
  }
  return {
    size: 5 * MB,
    rangeBytes: 65_536,
    fullConcurrency: [16, 64],
    rangeConcurrency: [16, 64],
    durationS: 5,
    warmupS: 1,
  };
}

/** Checks a peer's bytes (sha256 of full bodies, ranges byte for byte) before timing it. */
export async function verifyPeer(
  ctx: BenchContext,
  peer: Peer,
  reqPath: string,
  rec: Recording,
  file: string,
  rangeBytes: number,
) {
  const full = await ctx.loadgen.run({
    origin: peer.origin,
    path: reqPath,
    headers: peer.headers,
    concurrency: 2,
    requestsPerClient: 3,
    size: rec.size,
    sha256: rec.sha256,
    verifySample: 6,
  });
  const ranges = await ctx.loadgen.run({
    origin: peer.origin,
    path: reqPath,
    headers: peer.headers,
    concurrency: 4,
    requestsPerClient: 10,
    randomRangeBytes: rangeBytes,
    size: rec.size,
    contentFile: file,
    verifySample: 40,
  });
  for (const [what, r] of [
    ['full GETs', full],
    ['ranges', ranges],
  ] as const) {
    if (r.failed > 0 || r.mismatched > 0 || r.verified === 0) {
      throw new Error(
        `${peer.name} served wrong ${what}: ${r.failed} failed (${r.errors.join('; ')}), ${r.mismatched}/${r.verified} mismatched`,
      );
    }
  }
}

/** One timed run against a peer with wrk when available, else with the Node load generator. */
export async function measureThroughput(
  ctx: BenchContext,
  peer: Peer,
  reqPath: string,
  rec: Recording,
  opts: { connections: number; rangeBytes?: number; durationS: number; warmupS: number },
): Promise<ThroughputSample> {
  const once = async (durationS: number) => {
    const pids = peer.servingPids();
    const cpu0 = pids.reduce((a, pid) => a + (readCpuSeconds(pid) ?? 0), 0);
    const t0 = performance.now();
    let sample: Omit<ThroughputSample, 'serverCpu'>;
    if (ctx.tools.wrk) {
      const r = await runWrk({
        binary: ctx.tools.wrk,
        origin: peer.origin,
        path: reqPath,
        headers: peer.headers,
        connections: opts.connections,
        durationS: Math.max(1, Math.round(durationS)),
        rangeBytes: opts.rangeBytes,
        size: rec.size,
        scratchDir: ctx.scratch,
      });
      const expected = opts.rangeBytes ?? rec.size;
      // wrk's byte count includes headers and the responses still in flight when it stops; a mean outside these
      // bounds means the peer answered something else (a full body for a range, an error page).
      const slack = 2048 + (opts.connections * expected) / Math.max(1, r.requests);
      if (r.requests > 0 && (r.bytesPerResponse < expected || r.bytesPerResponse > expected + slack)) {
        throw new Error(
          `${peer.name}: ${fmtNum(r.bytesPerResponse)} bytes per response, expected about ${expected}`,
        );
      }
      sample = {
        reqPerS: r.reqPerS,
        bytesPerS: r.bytesPerS,
        p50Ms: r.latencyP50Ms,
        p99Ms: r.latencyP99Ms,
        errors: r.errors,
        requests: r.requests,
      };
    } else {
      const r = await ctx.loadgen.run({
        origin: peer.origin,
        path: reqPath,
        headers: peer.headers,
        concurrency: opts.connections,
        durationMs: durationS * 1000,
        randomRangeBytes: opts.rangeBytes,
        size: rec.size,
        verifySample: 0,
      });
      sample = {
        reqPerS: r.reqPerS,
        bytesPerS: r.bytesPerS,
        p50Ms: r.ttlbMs.p50,
        p99Ms: r.ttlbMs.p99,
        errors: r.failed,
        requests: r.requests,
      };
    }
    const wall = (performance.now() - t0) / 1000;
    const cpu1 = pids.reduce((a, pid) => a + (readCpuSeconds(pid) ?? 0), 0);
    return { ...sample, serverCpu: (cpu1 - cpu0) / wall };
  };
  if (opts.warmupS > 0) await once(opts.warmupS);
  return once(opts.durationS);
}

/** Server CPU time per request, µs: comparable across peers whether or not the client is what limits them. */
function cpuPerRequest(sample: ThroughputSample): string {
  return sample.reqPerS > 0 ? `${fmtNum((sample.serverCpu / sample.reqPerS) * 1e6)} µs` : '';
}

interface WarmRun {
  peer: string;
  kind: 'full' | 'range';
  connections: number;
  sample: ThroughputSample;
}

export async function warmThroughput(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  ctx.emulator.setThrottle({ ttfbMs: 0, bandwidth: 0, rangeSupport: true });
  const rec = await newRecording(ctx, p.size);
  const filesDir = path.join(ctx.scratch, 'files');
  await mkdir(filesDir, { recursive: true });
  const file = await writeRecordingFile(ctx, rec, filesDir);
  const tool = ctx.tools.wrk ? 'wrk -t1 (one client thread)' : 'the Node load generator (wrk not found)';
  const notes = [
    `One cached ${sizeLabel(p.size)} recording; ${p.durationS} s per run after ${p.warmupS} s of warm-up; client: ${tool}, keep-alive.`,
    `Range runs request random ${fmtBytes(p.rangeBytes)} windows (same seeded sequence for every peer). Each peer's bytes are checked first (sha256 of full bodies, ranges byte for byte).`,
    'recgate: 1 worker, JWT verified and call looked up on every request. nginx: static files, worker_processes 1, sendfile on, tcp_nopush off. @fastify/static: one process. "server CPU" = server CPU time ÷ wall time; "CPU per request" = server CPU time ÷ requests.',
    `${FASTIFY_FLOOR}: one Fastify route in one process that only moves the bytes (bench/lib/floor-server.ts): a range read with one pread into a reused buffer and sent with its headers in one writev, no authentication or lookup. What Node and Fastify cost alone, for comparing recgate's own work against.`,
  ];
  const starters: PeerStarter[] = [{ name: 'recgate 1w', start: () => ctx.startRecgate({ workers: 1 }) }];
  if (ctx.tools.nginx) {
    starters.push({
      name: NGINX_PEER_NAMES.static,
      start: () =>
        startNginx({
          binary: ctx.tools.nginx!,
          mode: 'static',
          upstream: ctx.upstream,
          workers: 1,
          filesDir,
        }),
    });
  } else notes.push('nginx not found: its rows are missing.');
  starters.push({ name: '@fastify/static', start: () => startFastifyStatic({ filesDir }) });
  starters.push({ name: FASTIFY_FLOOR, start: () => startFastifyFloor({ filesDir }) });

  const runs: WarmRun[] = [];
  await forEachPeer(starters, async (peer) => {
    const reqPath = await peer.prepare(rec);
    await verifyPeer(ctx, peer, reqPath, rec, file, p.rangeBytes);
    for (const [kind, concs] of [
      ['full', p.fullConcurrency],
      ['range', p.rangeConcurrency],
    ] as const) {
      for (const connections of concs) {
        const sample = await measureThroughput(ctx, peer, reqPath, rec, {
          connections,
          rangeBytes: kind === 'range' ? p.rangeBytes : undefined,
          durationS: p.durationS,
          warmupS: p.warmupS,
        });
        runs.push({ peer: peer.name, kind, connections, sample });
        ctx.log(
          `  ${peer.name}, ${kind} × ${connections}: ${fmtNum(sample.reqPerS)} req/s, ${fmtBytes(sample.bytesPerS)}/s, p99 ${fmtMs(sample.p99Ms)}, errors ${sample.errors}, server CPU ${sample.serverCpu.toFixed(2)}`,
        );
      }
    }
  });

  const find = (peer: string, kind: string, c: number) =>
    runs.find((r) => r.peer === peer && r.kind === kind && r.connections === c);
  const columns = [
    'requests',
    'conns',
    'peer',
    'req/s',
    'GB/s',
    'p50',
    'p99',
    'errors',
    'server CPU',
    'CPU per request',
    'recgate ÷ this (req/s)',
  ];
  const rows: string[][] = [];
  for (const run of runs
    .slice()
    .sort((a, b) => (a.kind === b.kind ? a.connections - b.connections : a.kind === 'full' ? -1 : 1))) {
    const mine = find('recgate 1w', run.kind, run.connections);
    rows.push([
      run.kind === 'full' ? `full ${sizeLabel(p.size)}` : `${fmtBytes(p.rangeBytes)} range`,
      String(run.connections),
      run.peer,
      fmtNum(run.sample.reqPerS),
      (run.sample.bytesPerS / 1e9).toFixed(2),
      fmtMs(run.sample.p50Ms),
      fmtMs(run.sample.p99Ms),
      String(run.sample.errors),
      run.sample.serverCpu.toFixed(2),
      cpuPerRequest(run.sample),
      run.peer === 'recgate 1w' ? '' : ratio(mine?.sample.reqPerS, run.sample.reqPerS),
    ]);
  }

  const targets: TargetCheck[] = [];
  const check = (
    kind: 'full' | 'range',
    peer: string,
    min: number,
    label: string,
    unit: 'req/s' | 'GB/s',
  ) => {
    const concs = kind === 'full' ? p.fullConcurrency : p.rangeConcurrency;
    const parts: string[] = [];
    let met: boolean | null = true;
    for (const c of concs) {
      const a = find('recgate 1w', kind, c);
      const b = find(peer, kind, c);
      if (!a || !b) {
        met = null;
        continue;
      }
      const va = unit === 'req/s' ? a.sample.reqPerS : a.sample.bytesPerS / 1e9;
      const vb = unit === 'req/s' ? b.sample.reqPerS : b.sample.bytesPerS / 1e9;
      parts.push(
        `${c} conns: ${fmtNum(va, unit === 'GB/s' ? 2 : 0)} vs ${fmtNum(vb, unit === 'GB/s' ? 2 : 0)} ${unit} (${ratio(va, vb)})`,
      );
      if (met !== null && va < min * vb) met = false;
    }
    targets.push({
      target: label,
      measured: parts.join('; ') || `${peer} not run`,
      met: parts.length === 0 ? null : met,
    });
  };
  check(
    'range',
    'nginx static',
    0.5,
    'Warm 64 KB ranges: recgate ≥ 0.5× nginx requests/s (one worker each)',
    'req/s',
  );
  check(
    'range',
    '@fastify/static',
    1.5,
    'Warm 64 KB ranges: recgate ≥ 1.5× @fastify/static requests/s',
    'req/s',
  );
  check('full', 'nginx static', 0.6, 'Warm full GETs: recgate ≥ 0.6× nginx GB/s', 'GB/s');

  const peers = [...new Set(runs.map((r) => r.peer))];
  const panel = (
    kind: 'full' | 'range',
    title: string,
    unit: string,
    pick: (s: ThroughputSample) => number,
  ): ChartPanel => {
    const concs = kind === 'full' ? p.fullConcurrency : p.rangeConcurrency;
    return {
      title,
      unit,
      groups: concs.map((c) => `${c} connections`),
      series: peers.map((name) => ({
        name,
        values: concs.map((c) => {
          const r = find(name, kind, c);
          return r ? pick(r.sample) : undefined;
        }),
      })),
    };
  };
  return {
    id: 'warm',
    title: 'Warm throughput',
    notes,
    columns,
    rows,
    targets,
    charts: [
      panel('range', `Warm ${fmtBytes(p.rangeBytes)} Range requests`, 'requests/s', (s) => s.reqPerS),
      panel('full', `Warm full ${sizeLabel(p.size)} GETs`, 'GB/s', (s) => s.bytesPerS / 1e9),
    ],
    data: { params: p, tool, runs },
  };
}
