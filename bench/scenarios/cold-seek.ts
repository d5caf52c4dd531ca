/**
 * Scenario 2, cold seek: one Range request near the end of an uncached 30 MB recording (a listener jumping to
 * the last minutes), upstream at 300 ms to first byte and 4 MB/s. Measures the time until its bytes arrive,
 * alone, and in "play then seek": a player starts the recording from byte 0 and, before the upstream's first
 * byte time has passed, seeks near its end.
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
  /** Play then seek: how long after the play request the seek goes out (less than the upstream's first byte). */
  seekAfterMs: number;
}

function params(ctx: BenchContext): Params {
  if (ctx.mode === 'smoke')
    return {
      ttfbMs: 50,
      bandwidth: 2 * MB,
      size: 1 * MB,
      at: 0.9,
      length: 16_384,
      repeats: 1,
      seekAfterMs: 20,
    };
  return {
    ttfbMs: 300,
    bandwidth: 4 * MB,
    size: 30 * MB,
    at: 0.95,
    length: 65_536,
    repeats: ctx.mode === 'full' ? 5 : 3,
    seekAfterMs: 100,
  };
}

interface SeekRun {
  peer: string;
  /** `seek`: the range alone; `play-seek`: the range `seekAfterMs` after a `bytes=0-` on the same recording. */
  kind: 'seek' | 'play-seek';
  upstreamRequests: number;
  upstreamBytes: number;
  load: LoadResult;
  /** Play then seek: whether the player's own `bytes=0-` got the whole recording. */
  playOk?: boolean;
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
    for (const kind of ['seek', 'play-seek'] as const) {
      for (let i = 0; i < p.repeats; i++) {
        const rec = await newRecording(ctx, p.size);
        const reqPath = await path(rec);
        const play =
          kind === 'play-seek'
            ? ctx.loadgen.run({
                origin,
                path: reqPath,
                headers,
                concurrency: 1,
                openRangeFrom: 0,
                size: p.size,
                sha256: rec.sha256,
                verifySample: 0,
              })
            : undefined;
        if (play !== undefined) await new Promise((r) => setTimeout(r, p.seekAfterMs));
        const load = await ctx.loadgen.run({
          origin,
          path: reqPath,
          headers,
          concurrency: 1,
          range,
          size: p.size,
          sha256: rec.sha256,
          verifySample: 0,
        });
        const played = await play;
        await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 50 : 300));
        const stats = ctx.emulator.stats();
        runs.push({
          peer: name,
          kind,
          upstreamRequests: stats.media_requests[rec.recording_sid] ?? 0,
          upstreamBytes: stats.media_bytes[rec.recording_sid] ?? 0,
          load,
          ...(played === undefined ? {} : { playOk: played.ok === 1 }),
        });
        ctx.emulator.reset();
        ctx.log(
          `  ${name}, ${kind}: first byte ${fmtMs(load.ttfbMs.p50)}, last ${fmtMs(load.ttlbMs.p50)}, ok ${load.ok}/1${load.failed ? ` (${load.errors.join('; ')})` : ''}${played?.failed ? `, play failed (${played.errors.join('; ')})` : ''}`,
        );
      }
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
  const kinds = ['seek', 'play-seek'] as const;
  const of = (name: string, kind: SeekRun['kind']) => runs.filter((r) => r.peer === name && r.kind === kind);
  const med = (name: string, kind: SeekRun['kind'], pick: (r: SeekRun) => number) =>
    summarize(of(name, kind).map(pick)).p50;
  const upTtfb = med('upstream direct', 'seek', (r) => (r.load.ok ? r.load.ttfbMs.p50 : Number.NaN));
  const okOf = (r: SeekRun) => r.load.ok === 1 && r.playOk !== false;
  const columns = [
    'scenario',
    'peer',
    'first byte',
    'all range bytes',
    'worst first byte',
    '÷ upstream TTFB',
    'upstream req',
    'upstream bytes',
    '÷ file',
    'ok',
  ];
  const rows = kinds.flatMap((kind) =>
    peers.map((name) => {
      const mine = of(name, kind);
      const first = med(name, kind, (r) => r.load.ttfbMs.p50);
      return [
        kind === 'seek' ? 'seek alone' : `play, seek after ${p.seekAfterMs} ms`,
        name,
        fmtMs(first),
        fmtMs(med(name, kind, (r) => r.load.ttlbMs.p50)),
        fmtMs(Math.max(...mine.map((r) => r.load.ttfbMs.p50))),
        ratio(first, upTtfb),
        String(med(name, kind, (r) => r.upstreamRequests)),
        fmtBytes(med(name, kind, (r) => r.upstreamBytes)),
        ratio(Math.max(...mine.map((r) => r.upstreamBytes)), p.size),
        `${mine.filter(okOf).length}/${mine.length}`,
      ];
    }),
  );
  const targets: TargetCheck[] = [];
  if (peers.includes('recgate 1w')) {
    for (const kind of kinds) {
      const mine = of('recgate 1w', kind);
      const first = med('recgate 1w', kind, (r) => r.load.ttfbMs.p50);
      const allOk = mine.every(okOf);
      const label = kind === 'seek' ? 'Cold seek' : `Play then seek (after ${p.seekAfterMs} ms)`;
      targets.push({
        target: `${label}: recgate first byte within 1.5× the upstream first-byte time`,
        measured: `${fmtMs(first)} vs upstream ${fmtMs(upTtfb)} (${ratio(first, upTtfb)})${allOk ? '' : ', some requests failed'}`,
        met: allOk && first <= 1.5 * upTtfb,
      });
      const worst = Math.max(...mine.map((r) => r.upstreamBytes));
      targets.push({
        target: `${label}: recgate's upstream bytes at most 1.1× the file`,
        measured: `at most ${fmtBytes(worst)} for a ${fmtBytes(p.size)} file (${ratio(worst, p.size)})`,
        met: worst <= 1.1 * p.size,
      });
    }
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
        groups: ['seek alone', `play, seek after ${p.seekAfterMs} ms`],
        log: true,
        series: peers.map((name) => ({
          name,
          values: kinds.map((kind) => med(name, kind, (r) => r.load.ttfbMs.p50)),
        })),
      },
    ],
    data: { params: p, range, runs },
  };
}
