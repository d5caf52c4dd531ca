/**
 * Scenario 1, cold stampede: N clients request one uncached recording at the same moment, with the upstream at
 * 300 ms to first byte and 4 MB/s. Measures upstream media requests and bytes, client time to first byte
 * (p50, p99) and to last byte, for recgate (1 and 4 workers), nginx proxy_cache_lock (defaults, long lock
 * timeouts, slice) and Varnish.
 */
import {
  type BenchContext,
  MB,
  newRecording,
  probeUpstreamTtfb,
  sizeLabel,
  upstreamHeaders,
  upstreamPath,
} from '../lib/context.js';
import { type LoadResult, loadgenPriorityNote } from '../lib/loadgen.js';
import { forEachPeer, NGINX_PEER_NAMES, type PeerStarter, startNginx, startVarnish } from '../lib/peers.js';
import type { ChartPanel, ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs, ratio, summarize } from '../lib/stats.js';

interface Cell {
  size: number;
  clients: number;
}

interface Params {
  ttfbMs: number;
  bandwidth: number;
  cells: Cell[];
  recgateWorkers: number[];
  verifySample: number;
}

function params(ctx: BenchContext): Params {
  const cross = (sizes: number[], ns: number[]) =>
    sizes.flatMap((size) => ns.map((clients) => ({ size, clients })));
  if (ctx.mode === 'smoke') {
    return {
      ttfbMs: 50,
      bandwidth: 4 * MB,
      cells: [{ size: 200_000, clients: 8 }],
      recgateWorkers: [1, 2],
      verifySample: 8,
    };
  }
  if (ctx.mode === 'full') {
    return {
      ttfbMs: 300,
      bandwidth: 4 * MB,
      cells: cross([1 * MB, 5 * MB, 30 * MB], [50, 200, 500]),
      recgateWorkers: [1, 4],
      verifySample: 20,
    };
  }
  return {
    ttfbMs: 300,
    bandwidth: 4 * MB,
    cells: [...cross([5 * MB], [50, 200, 500]), { size: 30 * MB, clients: 50 }],
    recgateWorkers: [1, 4],
    verifySample: 20,
  };
}

export interface StampedeRow {
  peer: string;
  size: number;
  clients: number;
  upstreamRequests: number;
  upstreamBytes: number;
  load: LoadResult;
  /** recgate: times its sync guards turned synchronous file calls off during the run (see `Peer.syncIoOff`). */
  syncIoOff?: number;
}

export async function coldStampede(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  const notes: string[] = [
    `Upstream: recgate emulator at ${p.ttfbMs} ms to first byte and ${fmtBytes(p.bandwidth)}/s per response; a fresh (uncached) recording per run.`,
    `All N clients start at once, each on its own connection (undici, in a separate process); sha256 checked on ${p.verifySample} bodies per run, status and length on all.`,
    'TTFB = request start to the first body byte. The upstream reference TTFB is the median of 3-request probes taken right before each run; its TTLB is one full download. recgate checks a JWT on every request; the nginx and Varnish peers check nothing.',
    `${loadgenPriorityNote(ctx.loadgen.nice)} "client stall" is that longest stall, ms.`,
    '"sync I/O off" (recgate): how many times during the run it turned its synchronous file-system calls off for 10 s after slow ones (recgate_sync_io_off_total; src/io/sync-guard.ts): 0 means the cold path\'s small file calls ran synchronously throughout.',
    'Each peer first serves one unmeasured stampede of 50 clients on a recording of its own (1 MB), so that no cell measures a process just started.',
  ];
  ctx.emulator.setThrottle({ ttfbMs: p.ttfbMs, bandwidth: p.bandwidth, rangeSupport: true });
  const sizes = [...new Set(p.cells.map((c) => c.size))];

  // A throwaway request first, so that the reference below does not include the emulator's warm-up.
  const warmup = await newRecording(ctx, sizes[0]!);
  await ctx.loadgen.run({
    origin: ctx.upstream.url,
    path: upstreamPath(ctx, warmup),
    headers: upstreamHeaders(ctx),
    concurrency: 2,
    range: { start: 0, end: 1023 },
    size: warmup.size,
  });
  const upstreamTtfb = new Map<number, LoadResult>();
  for (const size of sizes) {
    const rec = await newRecording(ctx, size);
    const r = await ctx.loadgen.run({
      origin: ctx.upstream.url,
      path: upstreamPath(ctx, rec),
      headers: upstreamHeaders(ctx),
      concurrency: 5,
      size,
      sha256: rec.sha256,
      verifySample: 5,
    });
    if (r.failed > 0) throw new Error(`upstream reference failed: ${r.errors.join('; ')}`);
    upstreamTtfb.set(size, r);
    ctx.log(
      `  upstream direct, ${sizeLabel(size)}: TTFB ${fmtMs(r.ttfbMs.p50)}, TTLB ${fmtMs(r.ttlbMs.p50)}`,
    );
  }

  const starters: PeerStarter[] = [];
  for (const workers of p.recgateWorkers) {
    starters.push({
      name: `recgate ${workers}w`,
      start: () => ctx.startRecgate({ workers }),
    });
  }
  if (ctx.tools.nginx) {
    for (const mode of ['proxy-default', 'proxy-long-lock', 'proxy-slice'] as const) {
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
  } else notes.push('varnishd not found: its rows are missing.');
  notes.push(
    'nginx: worker_processes auto; lock defaults = proxy_cache_lock_timeout/age 5 s; long = 600 s; slice = 1 MB slices with long locks. Varnish: streaming (do_stream) on.',
  );

  // The upstream's own first-byte time, sampled right before every run (3 small ranges of a separate recording,
  // so the run's counters stay clean) and pooled per cell: one early sample is at the mercy of a busy machine.
  const probe = await newRecording(ctx, sizes[0]!);
  const refSamples = new Map<string, number[]>();
  const cellKey = (c: Cell) => `${c.size}x${c.clients}`;
  const results: StampedeRow[] = [];
  await forEachPeer(starters, async (peer) => {
    // One unmeasured stampede first, as the mixed scenario does: no cell measures a process just started
    // (code not yet optimised, first connections). A gateway's first traffic after its start is what
    // bench:hosts reports on its own.
    const warm = await newRecording(ctx, Math.min(sizes[0]!, MB));
    await ctx.loadgen.run({
      origin: peer.origin,
      path: await peer.prepare(warm),
      headers: peer.headers,
      concurrency: ctx.mode === 'smoke' ? 4 : 50,
      size: warm.size,
    });
    ctx.emulator.reset();
    for (const cell of p.cells) {
      const rec = await newRecording(ctx, cell.size);
      const path = await peer.prepare(rec);
      // Read before the probe, so that the stampede does not follow right on a /metrics request.
      const off0 = await peer.syncIoOff?.();
      const ref = await probeUpstreamTtfb(ctx, probe);
      refSamples.set(cellKey(cell), [...(refSamples.get(cellKey(cell)) ?? []), ref]);
      const load = await ctx.loadgen.run({
        origin: peer.origin,
        path,
        headers: peer.headers,
        concurrency: cell.clients,
        size: cell.size,
        sha256: rec.sha256,
        verifySample: p.verifySample,
      });
      // Let any fetch the peer still has in flight be counted.
      await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 50 : 300));
      const off1 = await peer.syncIoOff?.();
      const stats = ctx.emulator.stats();
      const row: StampedeRow = {
        peer: peer.name,
        size: cell.size,
        clients: cell.clients,
        upstreamRequests: stats.media_requests[rec.recording_sid] ?? 0,
        upstreamBytes: stats.media_bytes[rec.recording_sid] ?? 0,
        load,
        ...(off0 === undefined || off1 === undefined ? {} : { syncIoOff: off1 - off0 }),
      };
      results.push(row);
      ctx.emulator.reset();
      ctx.log(
        `  ${peer.name}, ${sizeLabel(cell.size)} × ${cell.clients}: upstream ${row.upstreamRequests} req, TTFB p99 ${fmtMs(load.ttfbMs.p99)}, TTLB p99 ${fmtMs(load.ttlbMs.p99)}, ok ${load.ok}/${load.requests}${load.failed ? ` (${load.errors.join('; ')})` : ''}`,
      );
      await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 20 : 500));
    }
  });

  const upTtfbOf = (cell: Cell) =>
    summarize(refSamples.get(cellKey(cell)) ?? [upstreamTtfb.get(cell.size)!.ttfbMs.p50]).p50;
  const find = (peer: string, cell: Cell) =>
    results.find((r) => r.peer === peer && r.size === cell.size && r.clients === cell.clients);
  const columns = [
    'cell',
    'peer',
    'upstream req',
    'upstream bytes',
    'TTFB p50',
    'TTFB p99',
    'p99 − upstream',
    'TTLB p50',
    'TTLB p99',
    'p99 TTFB ÷ recgate 1w',
    'ok / checked',
    'client stall',
    'sync I/O off',
  ];
  const rows: string[][] = [];
  for (const cell of p.cells) {
    const up = upstreamTtfb.get(cell.size)!;
    const upTtfb = upTtfbOf(cell);
    const base = find('recgate 1w', cell);
    rows.push([
      `${sizeLabel(cell.size)} × ${cell.clients}`,
      'upstream direct (reference)',
      '1',
      fmtBytes(cell.size),
      fmtMs(upTtfb),
      fmtMs(upTtfb),
      '',
      fmtMs(up.ttlbMs.p50),
      fmtMs(up.ttlbMs.p50),
      '',
      '',
      '',
      '',
    ]);
    for (const r of results.filter((x) => x.size === cell.size && x.clients === cell.clients)) {
      rows.push([
        `${sizeLabel(cell.size)} × ${cell.clients}`,
        r.peer,
        String(r.upstreamRequests),
        fmtBytes(r.upstreamBytes),
        fmtMs(r.load.ttfbMs.p50),
        fmtMs(r.load.ttfbMs.p99),
        `${r.load.ttfbMs.p99 - upTtfb >= 0 ? '+' : ''}${fmtMs(r.load.ttfbMs.p99 - upTtfb)}`,
        fmtMs(r.load.ttlbMs.p50),
        fmtMs(r.load.ttlbMs.p99),
        ratio(r.load.ttfbMs.p99, base?.load.ttfbMs.p99),
        `${r.load.ok}/${r.load.requests}, ${r.load.verified - r.load.mismatched}/${r.load.verified}`,
        fmtMs(r.load.clientStallMs),
        r.syncIoOff === undefined ? '' : String(r.syncIoOff),
      ]);
    }
  }

  const targets: TargetCheck[] = [];
  const recgateRows = results.filter((r) => r.peer.startsWith('recgate'));
  const notOne = recgateRows.filter((r) => r.upstreamRequests !== 1 || r.load.failed > 0);
  targets.push({
    target: 'recgate makes exactly 1 upstream request at every N and size, every client served',
    measured:
      recgateRows.length === 0
        ? 'not run'
        : notOne.length === 0
          ? `1 request in all ${recgateRows.length} runs`
          : notOne
              .map(
                (r) =>
                  `${r.peer} ${sizeLabel(r.size)} × ${r.clients}: ${r.upstreamRequests} requests, ${r.load.failed} failed`,
              )
              .join('; '),
    met: recgateRows.length === 0 ? null : notOne.length === 0,
  });
  const n200 = p.cells.filter((c) => c.clients === 200);
  for (const cell of n200) {
    const up = upTtfbOf(cell);
    const varnish = find('Varnish', cell);
    const nginx = find('nginx lock (long timeouts)', cell) ?? find('nginx lock (defaults)', cell);
    for (const w of p.recgateWorkers) {
      const r = find(`recgate ${w}w`, cell);
      if (!r) continue;
      targets.push({
        target: `recgate ${w}w, ${sizeLabel(cell.size)} × 200: client p99 TTFB within 50 ms of the upstream's own`,
        measured: `p99 ${fmtMs(r.load.ttfbMs.p99)} vs upstream ${fmtMs(up)} (+${fmtMs(r.load.ttfbMs.p99 - up)})`,
        met: r.load.failed === 0 && r.load.ttfbMs.p99 - up <= 50,
      });
      targets.push({
        target: `recgate ${w}w, ${sizeLabel(cell.size)} × 200: p99 TTFB at least Varnish's level, far ahead of nginx`,
        measured: varnish
          ? `recgate ${fmtMs(r.load.ttfbMs.p99)}, Varnish ${fmtMs(varnish.load.ttfbMs.p99)} (${ratio(r.load.ttfbMs.p99, varnish.load.ttfbMs.p99)})${nginx ? `, ${nginx.peer} ${fmtMs(nginx.load.ttfbMs.p99)} (${ratio(nginx.load.ttfbMs.p99, r.load.ttfbMs.p99)} recgate's)` : ''}`
          : 'Varnish not run',
        met: varnish ? r.load.failed === 0 && r.load.ttfbMs.p99 <= varnish.load.ttfbMs.p99 : null,
      });
    }
  }

  const peersRun = [...new Set(results.map((r) => r.peer))];
  const groups = p.cells.map((c) => `${sizeLabel(c.size)} × ${c.clients}`);
  const panel = (
    title: string,
    unit: string,
    pick: (r: StampedeRow) => number,
    log?: boolean,
  ): ChartPanel => ({
    title,
    unit,
    groups,
    log,
    series: peersRun.map((name) => ({
      name,
      values: p.cells.map((c) => (find(name, c) ? pick(find(name, c)!) : undefined)),
    })),
  });
  return {
    id: 'cold',
    title: 'Cold stampede',
    notes,
    columns,
    rows,
    targets,
    charts: [
      panel('Cold stampede: client p99 time to first byte', 'ms', (r) => r.load.ttfbMs.p99, true),
      panel('Cold stampede: upstream media requests', 'requests', (r) => r.upstreamRequests, true),
    ],
    data: {
      params: p,
      upstream: Object.fromEntries([...upstreamTtfb].map(([size, r]) => [size, r])),
      upstreamTtfbSamples: Object.fromEntries(refSamples),
      runs: results,
    },
  };
}
