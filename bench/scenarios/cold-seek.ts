/**
 * Scenario 2, cold seek: one Range request near the end of an uncached 30 MB recording (a listener jumping to
 * the last minutes), upstream at 300 ms to first byte and 4 MB/s. Measures the time until its bytes arrive.
 */
import {
  type BenchContext,
  MB,
  newRecording,
  sizeLabel,
  upstreamHeaders,
  upstreamPath,
} from '../lib/context.js';
import type { LoadResult } from '../lib/loadgen.js';
import {
  forEachPeer,
  NGINX_PEER_NAMES,
  type PeerStarter,
  type Recording,
  startNginx,
  startVarnish,
} from '../lib/peers.js';
import type { ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs, ratio, summarize } from '../lib/stats.js';

interface Params {
  ttfbMs: number;
  bandwidth: number;
  size: number;
  /** Where the range starts, as a fraction of the size. */
  at: number;
  length: number;
  repeats: number;
}

function params(ctx: BenchContext): Params {
  if (ctx.mode === 'smoke')
    return { ttfbMs: 50, bandwidth: 2 * MB, size: 1 * MB, at: 0.9, length: 16_384, repeats: 1 };
  return {
    ttfbMs: 300,
    bandwidth: 4 * MB,
    size: 30 * MB,
    at: 0.95,
    length: 65_536,
    repeats: ctx.mode === 'full' ? 5 : 3,
  };
}

interface SeekRun {
  peer: string;
  upstreamRequests: number;
  upstreamBytes: number;
  load: LoadResult;
}

export async function coldSeek(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  const start = Math.floor(p.size * p.at);
  const range = { start, end: start + p.length - 1 };
  ctx.emulator.setThrottle({ ttfbMs: p.ttfbMs, bandwidth: p.bandwidth, rangeSupport: true });
  const notes = [
    `A fresh ${sizeLabel(p.size)} recording per request; Range bytes=${range.start}-${range.end} (${fmtBytes(p.length)} at ${Math.round(p.at * 100)}% of the file); median of ${p.repeats} runs.`,
    `Upstream: emulator at ${p.ttfbMs} ms to first byte and ${fmtBytes(p.bandwidth)}/s, honouring Range.`,
  ];

  const starters: PeerStarter[] = [{ name: 'recgate 1w', start: () => ctx.startRecgate({ workers: 1 }) }];
  if (ctx.tools.nginx) {
    for (const mode of ['proxy-default', 'proxy-slice'] as const) {
      starters.push({
        name: NGINX_PEER_NAMES[mode],
        start: () => startNginx({ binary: ctx.tools.nginx!, mode, upstream: ctx.upstream, workers: 'auto' }),
      });
    }
  } else notes.push('nginx not found: its rows are missing.');
  if (ctx.tools.varnish) {
    starters.push({
      name: 'Varnish',
      start: () => startVarnish({ binary: ctx.tools.varnish!, upstream: ctx.upstream }),
    });
  } else notes.push('varnishd not found: its row is missing.');

  const runs: SeekRun[] = [];
  const measure = async (
    name: string,
    origin: string,
    path: (rec: Recording) => Promise<string>,
    headers: Record<string, string>,
  ) => {
    for (let i = 0; i < p.repeats; i++) {
      const rec = await newRecording(ctx, p.size);
      const load = await ctx.loadgen.run({
        origin,
        path: await path(rec),
        headers,
        concurrency: 1,
        range,
        size: p.size,
        sha256: rec.sha256,
        verifySample: 0,
      });
      await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 50 : 300));
      const stats = ctx.emulator.stats();
      runs.push({
        peer: name,
        upstreamRequests: stats.media_requests[rec.recording_sid] ?? 0,
        upstreamBytes: stats.media_bytes[rec.recording_sid] ?? 0,
        load,
      });
      ctx.emulator.reset();
      ctx.log(
        `  ${name}: first byte ${fmtMs(load.ttfbMs.p50)}, last ${fmtMs(load.ttlbMs.p50)}, ok ${load.ok}/1${load.failed ? ` (${load.errors.join('; ')})` : ''}`,
      );
    }
  };
  await measure(
    'upstream direct',
    ctx.upstream.url,
    async (rec) => upstreamPath(ctx, rec),
    upstreamHeaders(ctx),
  );
  await forEachPeer(starters, (peer) =>
    measure(peer.name, peer.origin, (rec) => peer.prepare(rec), peer.headers),
  );

  const peers = [...new Set(runs.map((r) => r.peer))];
  const med = (name: string, pick: (r: SeekRun) => number) =>
    summarize(runs.filter((r) => r.peer === name).map(pick)).p50;
  const upTtfb = med('upstream direct', (r) => (r.load.ok ? r.load.ttfbMs.p50 : Number.NaN));
  const columns = [
    'peer',
    'first byte',
    'all range bytes',
    'worst first byte',
    '÷ upstream TTFB',
    'upstream req',
    'upstream bytes',
    'ok',
  ];
  const rows = peers.map((name) => {
    const mine = runs.filter((r) => r.peer === name);
    const first = med(name, (r) => r.load.ttfbMs.p50);
    return [
      name,
      fmtMs(first),
      fmtMs(med(name, (r) => r.load.ttlbMs.p50)),
      fmtMs(Math.max(...mine.map((r) => r.load.ttfbMs.p50))),
      ratio(first, upTtfb),
      String(med(name, (r) => r.upstreamRequests)),
      fmtBytes(med(name, (r) => r.upstreamBytes)),
      `${mine.filter((r) => r.load.ok === 1).length}/${mine.length}`,
    ];
  });
  const targets: TargetCheck[] = [];
  if (peers.includes('recgate 1w')) {
    const first = med('recgate 1w', (r) => r.load.ttfbMs.p50);
    const allOk = runs.filter((r) => r.peer === 'recgate 1w').every((r) => r.load.ok === 1);
    targets.push({
      target: 'Cold seek: recgate first byte within 1.5× the upstream first-byte time',
      measured: `${fmtMs(first)} vs upstream ${fmtMs(upTtfb)} (${ratio(first, upTtfb)})${allOk ? '' : ', some requests failed'}`,
      met: allOk && first <= 1.5 * upTtfb,
    });
  }
  return {
    id: 'seek',
    title: 'Cold seek',
    notes,
    columns,
    rows,
    targets,
    charts: [
      {
        title: `Cold seek: first byte of a Range at ${Math.round(p.at * 100)}% of an uncached ${sizeLabel(p.size)} recording`,
        unit: 'ms',
        groups: ['first byte', 'all range bytes'],
        log: true,
        series: peers.map((name) => ({
          name,
          values: [med(name, (r) => r.load.ttfbMs.p50), med(name, (r) => r.load.ttlbMs.p50)],
        })),
      },
    ],
    data: { params: p, range, runs },
  };
}
