/**
 * Scenario 5, scaling with workers: warm 64 KB Range requests/s for recgate with 1, 2 and 4 workers, beside
 * nginx static with as many worker processes. The core count is part of the result.
 */

import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { type BenchContext, MB, newRecording, sizeLabel, writeRecordingFile } from '../lib/context.js';
import { forEachPeer, NGINX_PEER_NAMES, type PeerStarter, startNginx } from '../lib/peers.js';
import type { ScenarioResult } from '../lib/report.js';
import { fmtBytes, fmtMs, fmtNum, ratio } from '../lib/stats.js';
import { measureThroughput, type ThroughputSample, verifyPeer } from './warm.js';

function params(ctx: BenchContext) {
  if (ctx.mode === 'smoke')
    return { size: 300_000, rangeBytes: 16_384, workers: [1, 2], connections: 4, durationS: 1, warmupS: 0 };
  return {
    size: 5 * MB,
    rangeBytes: 65_536,
    workers: [1, 2, 4],
    connections: 64,
    durationS: ctx.mode === 'full' ? 10 : 5,
    warmupS: 1,
  };
}

interface ScalingRun {
  /** 'recgate' or 'nginx static': the worker count is its own column here, not part of the name. */
  peer: string;
  workers: number;
  sample: ThroughputSample;
}

export async function scaling(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  const cores = availableParallelism();
  ctx.emulator.setThrottle({ ttfbMs: 0, bandwidth: 0, rangeSupport: true });
  const rec = await newRecording(ctx, p.size);
  const filesDir = path.join(ctx.scratch, 'files-scaling');
  await mkdir(filesDir, { recursive: true });
  const file = await writeRecordingFile(ctx, rec, filesDir);
  const tool = ctx.tools.wrk ? 'wrk -t1' : 'the Node load generator';
  const notes = [
    `${cores} CPU cores on this machine, shared by the server's workers and the client (${tool}, ${p.connections} keep-alive connections).`,
    `Random ${fmtBytes(p.rangeBytes)} Range requests on a cached ${sizeLabel(p.size)} recording, ${p.durationS} s per run; recgate with JWT auth on.`,
  ];
  const runs: ScalingRun[] = [];
  for (const workers of p.workers) {
    const starters: PeerStarter[] = [
      { name: 'recgate', start: () => ctx.startRecgate({ workers, name: 'recgate' }) },
    ];
    if (ctx.tools.nginx) {
      starters.push({
        name: NGINX_PEER_NAMES.static,
        start: () =>
          startNginx({ binary: ctx.tools.nginx!, mode: 'static', upstream: ctx.upstream, workers, filesDir }),
      });
    }
    await forEachPeer(starters, async (peer) => {
      const reqPath = await peer.prepare(rec);
      await verifyPeer(ctx, peer, reqPath, rec, file, p.rangeBytes);
      const sample = await measureThroughput(ctx, peer, reqPath, rec, {
        connections: p.connections,
        rangeBytes: p.rangeBytes,
        durationS: p.durationS,
        warmupS: p.warmupS,
      });
      runs.push({ peer: peer.name, workers, sample });
      ctx.log(
        `  ${peer.name} ${workers}w: ${fmtNum(sample.reqPerS)} req/s, p99 ${fmtMs(sample.p99Ms)}, server CPU ${sample.serverCpu.toFixed(2)}`,
      );
    });
  }
  if (!ctx.tools.nginx) notes.push('nginx not found: its column is missing.');
  const find = (peer: string, w: number) => runs.find((r) => r.peer === peer && r.workers === w);
  const columns = [
    'workers',
    'recgate req/s',
    'recgate p99',
    '÷ 1 worker',
    'server CPU',
    'nginx static req/s',
    'nginx p99',
    'recgate ÷ nginx',
  ];
  const rows = p.workers.map((w) => {
    const r = find('recgate', w);
    const n = find('nginx static', w);
    return [
      String(w),
      fmtNum(r?.sample.reqPerS),
      fmtMs(r?.sample.p99Ms),
      ratio(r?.sample.reqPerS, find('recgate', 1)?.sample.reqPerS),
      r ? r.sample.serverCpu.toFixed(2) : 'n/a',
      fmtNum(n?.sample.reqPerS),
      fmtMs(n?.sample.p99Ms),
      ratio(r?.sample.reqPerS, n?.sample.reqPerS),
    ];
  });
  return {
    id: 'scaling',
    title: `Scaling with workers (${cores} cores)`,
    notes,
    columns,
    rows,
    targets: [],
    charts: [
      {
        title: `Scaling: warm ${fmtBytes(p.rangeBytes)} Range requests, ${cores} cores`,
        unit: 'requests/s',
        groups: p.workers.map((w) => `${w} worker${w > 1 ? 's' : ''}`),
        series: (['recgate', 'nginx static'] as const)
          .filter((name) => runs.some((r) => r.peer === name))
          .map((name) => ({ name, values: p.workers.map((w) => find(name, w)?.sample.reqPerS) })),
      },
    ],
    data: { params: p, cores, tool, runs },
  };
}
