/**
 * Scenario 4, memory: resident memory of one recgate worker serving 200 concurrent downloads of one 50 MB
 * recording, first cold (streamed to every waiter while the one upstream download runs), then warm (from disk).
 */
import { type BenchContext, MB, newRecording, sizeLabel } from '../lib/context.js';
import type { LoadResult } from '../lib/loadgen.js';
import { readMemory, sampleMemory } from '../lib/procfs.js';
import type { ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs } from '../lib/stats.js';

interface Params {
  size: number;
  clients: number;
  ttfbMs: number;
  bandwidth: number;
  limit: number;
}

function params(ctx: BenchContext): Params {
  if (ctx.mode === 'smoke')
    return { size: 400_000, clients: 6, ttfbMs: 20, bandwidth: 4 * MB, limit: 150 * 2 ** 20 };
  return { size: 50 * MB, clients: 200, ttfbMs: 300, bandwidth: 4 * MB, limit: 150 * 2 ** 20 };
}

interface Phase {
  phase: 'cold' | 'warm';
  baselineRss: number;
  peakRss: number;
  upstreamRequests: number;
  load: LoadResult;
}

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

export async function memory(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  ctx.emulator.setThrottle({ ttfbMs: p.ttfbMs, bandwidth: p.bandwidth, rangeSupport: true });
  const rec = await newRecording(ctx, p.size);
  const peer = await ctx.startRecgate({ workers: 1 });
  const phases: Phase[] = [];
  let hwm = Number.NaN;
  let startRss = Number.NaN;
  try {
    const reqPath = await peer.prepare(rec);
    const [pid] = peer.servingPids();
    startRss = readMemory(pid!)?.rss ?? Number.NaN;
    for (const phase of ['cold', 'warm'] as const) {
      const baselineRss = readMemory(pid!)?.rss ?? Number.NaN;
      const sampler = sampleMemory([pid!], 25);
      const load = await ctx.loadgen.run({
        origin: peer.origin,
        path: reqPath,
        headers: peer.headers,
        concurrency: p.clients,
        size: p.size,
        sha256: rec.sha256,
        verifySample: 4,
        timeoutMs: 300_000,
      });
      const [m] = sampler.stop();
      const stats = ctx.emulator.stats();
      phases.push({
        phase,
        baselineRss,
        peakRss: m!.peakRss,
        upstreamRequests: stats.media_requests[rec.recording_sid] ?? 0,
        load,
      });
      ctx.emulator.reset();
      ctx.log(
        `  ${phase}: peak RSS ${MiB(m!.peakRss)} (from ${MiB(baselineRss)}), ok ${load.ok}/${load.requests}, TTLB p99 ${fmtMs(load.ttlbMs.p99)}`,
      );
    }
    hwm = readMemory(pid!)?.hwm ?? Number.NaN;
  } finally {
    await peer.stop();
  }
  const notes = [
    `One recgate process (--workers 1), ${p.clients} concurrent clients each downloading the whole ${sizeLabel(p.size)} recording; VmRSS sampled every 25 ms from /proc, VmHWM read at the end.`,
    `Cold: upstream at ${p.ttfbMs} ms to first byte and ${fmtBytes(p.bandwidth)}/s, all clients fed from the one download. Warm: the same recording again, from disk. Clients read as fast as they can.`,
    `RSS right after start: ${MiB(startRss)}.`,
  ];
  const columns = [
    'phase',
    'clients',
    'RSS before',
    'peak RSS',
    'upstream req',
    'TTLB p50',
    'TTLB p99',
    'delivered',
    'ok / checked',
  ];
  const rows = phases.map((ph) => [
    ph.phase,
    String(p.clients),
    MiB(ph.baselineRss),
    MiB(ph.peakRss),
    String(ph.upstreamRequests),
    fmtMs(ph.load.ttlbMs.p50),
    fmtMs(ph.load.ttlbMs.p99),
    fmtBytes(ph.load.bytes),
    `${ph.load.ok}/${ph.load.requests}, ${ph.load.verified - ph.load.mismatched}/${ph.load.verified}`,
  ]);
  rows.push(['whole run (VmHWM)', '', '', MiB(hwm), '', '', '', '', '']);
  const allOk = phases.every((ph) => ph.load.failed === 0 && ph.load.mismatched === 0);
  const targets: TargetCheck[] = [
    {
      target: `Memory: one recgate worker under ${MiB(p.limit)} RSS serving ${p.clients} concurrent ${sizeLabel(p.size)} downloads`,
      measured: `VmHWM ${MiB(hwm)} (cold peak ${MiB(phases[0]?.peakRss ?? Number.NaN)}, warm peak ${MiB(phases[1]?.peakRss ?? Number.NaN)})${allOk ? '' : '; some downloads failed'}`,
      met: Number.isFinite(hwm) ? hwm < p.limit && allOk : null,
    },
  ];
  return {
    id: 'memory',
    title: 'Memory',
    notes,
    columns,
    rows,
    targets,
    charts: [
      {
        title: `Memory: one recgate worker, ${p.clients} concurrent ${sizeLabel(p.size)} downloads`,
        unit: 'MiB',
        groups: phases.map((ph) => ph.phase),
        series: [
          { name: 'RSS before', values: phases.map((ph) => ph.baselineRss / 2 ** 20) },
          { name: 'peak RSS', values: phases.map((ph) => ph.peakRss / 2 ** 20) },
        ],
      },
    ],
    data: { params: p, startRss, hwm, phases },
  };
}
