/**
 * Scenario "mixed": N clients at once on one uncached recording, as a page full of players makes them: full
 * GETs, `bytes=0-`, random 64 KB windows, suffix ranges (`bytes=-65536`) and HEADs, a fifth each, upstream at
 * 300 ms to first byte and 4 MB/s. Measures first byte per kind (the byte-0 kinds against the upstream's own),
 * for the ranged kinds how long their last byte came after the download reached it, and the upstream bytes
 * against the file (the documented bound: at most 1.1×).
 */
import {
  type BenchContext,
  MB,
  newRecording,
  probeUpstreamTtfb,
  sizeLabel,
  writeRecordingFile,
} from '../lib/context.js';
import type { LoadResult, LoadSpec } from '../lib/loadgen.js';
import { forEachPeer, type PeerStarter, startVarnish } from '../lib/peers.js';
import type { ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs, ratio } from '../lib/stats.js';

interface Params {
  ttfbMs: number;
  bandwidth: number;
  size: number;
  clients: number[];
  recgateWorkers: number[];
  windowBytes: number;
}

function params(ctx: BenchContext): Params {
  if (ctx.mode === 'smoke') {
    return {
      ttfbMs: 50,
      bandwidth: 4 * MB,
      size: 400_000,
      clients: [10],
      recgateWorkers: [1, 2],
      windowBytes: 16_384,
    };
  }
  return {
    ttfbMs: 300,
    bandwidth: 4 * MB,
    size: 5 * MB,
    clients: ctx.mode === 'full' ? [200, 500] : [200],
    recgateWorkers: [1, 4],
    windowBytes: 65_536,
  };
}

/** The kinds of client, a fifth of N each. */
const KINDS = ['full GET', 'bytes=0-', 'random window', 'suffix', 'HEAD'] as const;
type Kind = (typeof KINDS)[number];

interface MixedRow {
  peer: string;
  clients: number;
  upstreamRequests: number;
  upstreamBytes: number;
  loads: Record<Kind, LoadResult>;
}

export async function coldMixed(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  ctx.emulator.setThrottle({ ttfbMs: p.ttfbMs, bandwidth: p.bandwidth, rangeSupport: true });
  const notes: string[] = [
    `Upstream: emulator at ${p.ttfbMs} ms to first byte and ${fmtBytes(p.bandwidth)}/s per response; a fresh ${sizeLabel(p.size)} recording per run.`,
    `N clients at once, a fifth of each kind: ${KINDS.join(', ')} (windows and suffixes of ${fmtBytes(p.windowBytes)}). Status and length checked on all, bytes on a sample of each kind.`,
    `"Beyond reach": a ranged response's last byte minus when the download reached it, modelled as the upstream's first-byte time (probed right before each run) + (last byte + 1) ÷ ${fmtBytes(p.bandwidth)}/s. Negative: served before the download got there (a seek-ahead slice).`,
  ];
  const starters: PeerStarter[] = p.recgateWorkers.map((workers) => ({
    name: `recgate ${workers}w`,
    start: () => ctx.startRecgate({ workers }),
  }));
  if (ctx.tools.varnish) {
    starters.push({
      name: 'Varnish',
      start: () => startVarnish({ binary: ctx.tools.varnish!, upstream: ctx.upstream }),
    });
  } else notes.push('varnishd not found: its rows are missing.');

  const probe = await newRecording(ctx, p.size);
  const refs: number[] = [];
  const rows: MixedRow[] = [];
  await forEachPeer(starters, async (peer) => {
    // A fresh process answers its first requests slowly (lazy modules, cold JIT): one unmeasured mixed run first.
    const warm = await newRecording(ctx, 100_000);
    const warmPath = await peer.prepare(warm);
    await Promise.all(
      KINDS.map((kind) =>
        ctx.loadgen.run({
          origin: peer.origin,
          path: warmPath,
          headers: peer.headers,
          concurrency: Math.max(1, Math.floor(p.clients[0]! / KINDS.length)),
          size: warm.size,
          verifySample: 0,
          ...shapesOf(p)[kind],
        }),
      ),
    );
    for (const clients of p.clients) {
      const rec = await newRecording(ctx, p.size);
      const contentFile = await writeRecordingFile(ctx, rec, ctx.scratch);
      ctx.emulator.reset();
      const path = await peer.prepare(rec);
      const ref = await probeUpstreamTtfb(ctx, probe);
      refs.push(ref);
      ctx.emulator.reset();
      const each = Math.max(1, Math.floor(clients / KINDS.length));
      const base: LoadSpec = {
        origin: peer.origin,
        path,
        headers: peer.headers,
        concurrency: each,
        size: p.size,
        sha256: rec.sha256,
        contentFile,
        verifySample: 4,
        reach: { ttfbMs: ref, bytesPerS: p.bandwidth },
      };
      const results = await Promise.all(
        KINDS.map((kind) => ctx.loadgen.run({ ...base, ...shapesOf(p)[kind] })),
      );
      await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 50 : 500));
      const stats = ctx.emulator.stats();
      const row: MixedRow = {
        peer: peer.name,
        clients,
        upstreamRequests: stats.media_requests[rec.recording_sid] ?? 0,
        upstreamBytes: stats.media_bytes[rec.recording_sid] ?? 0,
        loads: Object.fromEntries(KINDS.map((k, i) => [k, results[i]!])) as Record<Kind, LoadResult>,
      };
      rows.push(row);
      ctx.emulator.reset();
      const failed = results.flatMap((r) => r.errors);
      ctx.log(
        `  ${peer.name}, mixed × ${clients}: upstream ${row.upstreamRequests} req, ${fmtBytes(row.upstreamBytes)} (${ratio(row.upstreamBytes, p.size)}), byte-0 TTFB p99 ${fmtMs(byteZeroP99(row))}${failed.length ? `, failures: ${failed.join('; ')}` : ''}`,
      );
    }
  });

  const upTtfb = refs.length ? [...refs].sort((a, b) => a - b)[Math.floor(refs.length / 2)]! : Number.NaN;
  notes.push(`Upstream first byte (median of the probes): ${fmtMs(upTtfb)}.`);
  const columns = [
    'N',
    'peer',
    'kind',
    'TTFB p50',
    'TTFB p99',
    'p99 − upstream',
    'beyond reach p50',
    'beyond reach p99',
    'ok / checked',
    'upstream req',
    'upstream bytes ÷ file',
  ];
  const table: string[][] = [];
  for (const row of rows) {
    for (const kind of KINDS) {
      const l = row.loads[kind];
      const ranged = kind === 'random window' || kind === 'suffix';
      table.push([
        String(row.clients),
        row.peer,
        kind,
        fmtMs(l.ttfbMs.p50),
        fmtMs(l.ttfbMs.p99),
        `${l.ttfbMs.p99 - upTtfb >= 0 ? '+' : ''}${fmtMs(l.ttfbMs.p99 - upTtfb)}`,
        ranged ? fmtMs(l.beyondMs?.p50) : '',
        ranged ? fmtMs(l.beyondMs?.p99) : '',
        `${l.ok}/${l.requests}, ${l.verified - l.mismatched}/${l.verified}`,
        kind === 'full GET' ? String(row.upstreamRequests) : '',
        kind === 'full GET' ? `${fmtBytes(row.upstreamBytes)} (${ratio(row.upstreamBytes, p.size)})` : '',
      ]);
    }
  }
  const targets: TargetCheck[] = [];
  for (const row of rows.filter((r) => r.peer.startsWith('recgate'))) {
    const ok = KINDS.every((k) => row.loads[k].failed === 0 && row.loads[k].mismatched === 0);
    targets.push({
      target: `${row.peer}, mixed × ${row.clients}: upstream bytes at most 1.1× the file, every client served`,
      measured: `${fmtBytes(row.upstreamBytes)} for ${fmtBytes(p.size)} (${ratio(row.upstreamBytes, p.size)}), ${row.upstreamRequests} requests${ok ? '' : '; some clients failed'}`,
      met: ok && row.upstreamBytes <= 1.1 * p.size,
    });
    const p99 = byteZeroP99(row);
    targets.push({
      target: `${row.peer}, mixed × ${row.clients}: byte-0 clients' p99 first byte within 50 ms of the upstream's own`,
      measured: `p99 ${fmtMs(p99)} vs upstream ${fmtMs(upTtfb)} (+${fmtMs(p99 - upTtfb)})`,
      met: ok && p99 - upTtfb <= 50,
    });
  }
  const peers = [...new Set(rows.map((r) => r.peer))];
  return {
    id: 'mixed',
    title: 'Cold mixed stampede',
    notes,
    columns,
    rows: table,
    targets,
    charts: [
      {
        title: `Cold mixed stampede (${sizeLabel(p.size)}): p99 first byte per kind of client`,
        unit: 'ms',
        groups: rows
          .filter((r) => r.peer === peers[0])
          .flatMap((r) => KINDS.map((k) => `${k} × ${r.clients}`)),
        series: peers.map((name) => ({
          name,
          values: rows.filter((r) => r.peer === name).flatMap((r) => KINDS.map((k) => r.loads[k].ttfbMs.p99)),
        })),
      },
    ],
    data: { params: p, upstreamTtfbSamples: refs, runs: rows },
  };
}

/** What each kind of client asks for. */
function shapesOf(p: Params): Record<Kind, Partial<LoadSpec>> {
  return {
    'full GET': {},
    'bytes=0-': { openRangeFrom: 0 },
    'random window': { randomRangeBytes: p.windowBytes },
    suffix: { suffixBytes: p.windowBytes },
    HEAD: { method: 'HEAD' },
  };
}

/** The worst p99 first byte over the kinds that start at byte 0 (full GETs, `bytes=0-`, HEAD). */
function byteZeroP99(row: MixedRow): number {
  return Math.max(
    row.loads['full GET'].ttfbMs.p99,
    row.loads['bytes=0-'].ttfbMs.p99,
    row.loads.HEAD.ttfbMs.p99,
  );
}
