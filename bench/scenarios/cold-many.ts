/**
 * Scenario "many": 1,000 different uncached recordings requested at once, one client each, upstream at 300 ms to
 * first byte and 4 MB/s per response. Measures upstream requests (exactly one per recording), the time until the
 * last client has its whole recording against the upstream's own time for the same load at the same
 * concurrency, and the resident memory of the one recgate worker (target: under 150 MiB). recgate runs with one
 * worker, then with two (the machine's two cores) sharing the same upstream cap, then with one again and its data
 * dir in memory (tmpfs), which shows what the data dir's file system costs beside recgate's own work.
 */
import { accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  type BenchContext,
  MB,
  newRecording,
  sizeLabel,
  upstreamHeaders,
  upstreamPath,
} from '../lib/context.js';
import type { LoadResult, LoadSpec } from '../lib/loadgen.js';
import type { Recording } from '../lib/peers.js';
import { describeFileSystem, fileSystemOf, readCpuSeconds, readMemory, sampleMemory } from '../lib/procfs.js';
import type { ScenarioResult, TargetCheck } from '../lib/report.js';
import { fmtBytes, fmtMs, fmtNum, ratio } from '../lib/stats.js';

interface Params {
  ttfbMs: number;
  bandwidth: number;
  recordings: number;
  size: number;
  /** recgate's upstream-concurrency, and the concurrency of the upstream reference run that matches it. */
  upstreamConcurrency: number;
  memoryLimit: number;
}

function params(ctx: BenchContext): Params {
  const memoryLimit = 150 * 2 ** 20;
  if (ctx.mode === 'smoke') {
    return {
      ttfbMs: 50,
      bandwidth: 4 * MB,
      recordings: 20,
      size: 20_000,
      upstreamConcurrency: 5,
      memoryLimit,
    };
  }
  return {
    ttfbMs: 300,
    bandwidth: 4 * MB,
    recordings: 1000,
    size: 200_000,
    upstreamConcurrency: 100,
    memoryLimit,
  };
}

interface ManyRun {
  peer: string;
  concurrency: number;
  /** Upstream media requests for the run's recordings, summed, and how many recordings got other than one. */
  upstreamRequests: number;
  notOnce: number;
  upstreamBytes: number;
  load: LoadResult;
  peakRss?: number;
  /** The recgate process's CPU seconds (every thread, user and system) from the load's start to its end. */
  cpuSeconds?: number;
  /** The same for the emulator (it runs in the harness's own process) and for the load generator's process. */
  emulatorCpuSeconds: number;
  loadgenCpuSeconds?: number;
  /** Times recgate's sync guards turned synchronous file calls off during the load (see `Peer.syncIoOff`). */
  syncIoOff?: number;
}

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** `--upstream-concurrency` for each of `workers` workers: the cap, shared. */
function slotsPerWorker(p: Params, workers: number): number {
  return Math.max(1, Math.floor(p.upstreamConcurrency / workers));
}

/** CPU seconds of `pids` so far, summed; undefined without pids or when one cannot be read. */
function cpuOf(pids: number[]): number | undefined {
  if (pids.length === 0) return undefined;
  let sum = 0;
  for (const pid of pids) {
    const cpu = readCpuSeconds(pid);
    if (cpu === undefined) return undefined;
    sum += cpu;
  }
  return sum;
}

/** A writable tmpfs for the in-memory run, unless the data dirs are on one already; else undefined. */
function memoryRoot(): string | undefined {
  if (fileSystemOf(tmpdir())?.type === 'tmpfs') return undefined;
  const root = '/dev/shm';
  if (fileSystemOf(root)?.type !== 'tmpfs') return undefined;
  try {
    accessSync(root, constants.W_OK);
  } catch {
    return undefined;
  }
  return root;
}

/** The in-memory run's row. */
const IN_MEMORY = 'recgate 1w, data dir on tmpfs';

/** CPU seconds over a run as cores busy on average (CPU time ÷ the run's wall time). */
const cores = (cpuSeconds: number | undefined, run: ManyRun) =>
  cpuSeconds === undefined ? '' : (cpuSeconds / (run.load.elapsedMs / 1000)).toFixed(2);

export async function coldMany(ctx: BenchContext): Promise<ScenarioResult> {
  const p = params(ctx);
  const inMemory = memoryRoot();
  ctx.emulator.setThrottle({ ttfbMs: p.ttfbMs, bandwidth: p.bandwidth, rangeSupport: true });
  const notes = [
    `${p.recordings} different uncached ${sizeLabel(p.size)} recordings, one client each, all at once; upstream at ${p.ttfbMs} ms to first byte and ${fmtBytes(p.bandwidth)}/s per response. sha256 checked on 20 bodies, status and length on all.`,
    `recgate is configured as a user expecting this load would: --upstream-concurrency ${p.upstreamConcurrency} (Twilio's default limit of concurrent API requests per account is 100), --upstream-queue-max ${p.recordings} (every cold request may wait for a slot) and the cold-download rate limit off (RECGATE_COLD_DOWNLOAD_RATE=0: one business asks for every recording). Requests beyond the cap queue in recgate; none is refused.`,
    `The reference is the upstream itself serving the same ${p.recordings} downloads, all at once and ${p.upstreamConcurrency} at a time (the cap recgate runs with): throughput bounded by the upstream means recgate's total time is close to the latter.`,
    'recgate\'s "server CPU" = its CPU time (every thread, user and system) ÷ the run\'s wall time, in cores; "CPU per download" = that CPU time ÷ the downloads. "emulator CPU" (the harness\'s process, where the emulator runs) and "load generator CPU" likewise, in cores: recgate, the emulator and the load generator share two cores, so a sum near 2 means the run was bound by CPU.',
    `"recgate 2w": two workers (node:cluster, the machine's two cores), each with --upstream-concurrency ${slotsPerWorker(p, 2)}, so that the cap in all is the same; its peak RSS is the larger worker's, its CPU both workers' together.`,
    `The data dirs are on ${describeFileSystem(fileSystemOf(tmpdir()))}.${inMemory === undefined ? '' : ` "${IN_MEMORY}": the one-worker run again with its data dir in ${inMemory}, where creating, renaming and removing a download's files costs the kernel least: the difference between the two one-worker rows is the data dir's file system, not recgate's own work. The targets are judged on the first row.`}`,
    '"sync I/O off" = how many times during the run recgate turned its synchronous file-system calls off for 10 s after slow ones (recgate_sync_io_off_total; src/io/sync-guard.ts): 0 means the cold path\'s small file calls ran synchronously throughout, more means the thread pool served them for a while.',
  ];
  const recordings = async () => {
    const out: Recording[] = [];
    for (let i = 0; i < p.recordings; i++) out.push(await newRecording(ctx, p.size));
    return out;
  };
  const runs: ManyRun[] = [];
  const measure = async (
    peer: string,
    concurrency: number,
    recs: Recording[],
    spec: Pick<LoadSpec, 'origin' | 'headers'>,
    paths: string[],
    pids: number[] = [],
    syncIoOff?: () => Promise<number | undefined>,
  ) => {
    ctx.emulator.reset();
    const off0 = await syncIoOff?.();
    const sampler = pids.length === 0 ? undefined : sampleMemory(pids, 25);
    const cpu0 = cpuOf(pids);
    const harness0 = process.cpuUsage();
    const loadgen0 = readCpuSeconds(ctx.loadgen.pid);
    // Clients beyond `concurrency` take their turn after a previous one finishes, like a capped pool.
    const load = await ctx.loadgen.run({
      ...spec,
      path: paths[0]!,
      concurrency,
      requestsPerClient: Math.ceil(recs.length / concurrency),
      size: p.size,
      targets: recs.map((rec, i) => ({ path: paths[i]!, size: rec.size, sha256: rec.sha256 })),
      verifySample: 20,
      timeoutMs: 120_000,
    });
    const peaks = sampler?.stop().map((s) => s.peakRss);
    const peak = peaks === undefined ? undefined : Math.max(...peaks);
    const cpu1 = cpuOf(pids);
    const cpuSeconds = cpu0 === undefined || cpu1 === undefined ? undefined : cpu1 - cpu0;
    const harness = process.cpuUsage(harness0);
    const loadgen1 = readCpuSeconds(ctx.loadgen.pid);
    const off1 = await syncIoOff?.();
    await new Promise((r) => setTimeout(r, ctx.mode === 'smoke' ? 50 : 300));
    const stats = ctx.emulator.stats();
    const counts = recs.map((rec) => stats.media_requests[rec.recording_sid] ?? 0);
    const run: ManyRun = {
      peer,
      concurrency,
      upstreamRequests: counts.reduce((a, b) => a + b, 0),
      notOnce: counts.filter((n) => n !== 1).length,
      upstreamBytes: recs.reduce((a, rec) => a + (stats.media_bytes[rec.recording_sid] ?? 0), 0),
      load,
      ...(peak === undefined ? {} : { peakRss: peak }),
      ...(cpuSeconds === undefined ? {} : { cpuSeconds }),
      emulatorCpuSeconds: (harness.user + harness.system) / 1e6,
      ...(loadgen0 === undefined || loadgen1 === undefined ? {} : { loadgenCpuSeconds: loadgen1 - loadgen0 }),
      ...(off0 === undefined || off1 === undefined ? {} : { syncIoOff: off1 - off0 }),
    };
    runs.push(run);
    ctx.emulator.reset();
    ctx.log(
      `  ${peer} (${concurrency} at once): ${load.ok}/${load.requests} ok in ${fmtMs(load.elapsedMs)}, upstream ${run.upstreamRequests} requests${peak === undefined ? '' : `, peak RSS ${MiB(peak)}`}${cpuSeconds === undefined ? '' : `, CPU ${cpuSeconds.toFixed(1)} s`}${load.failed ? ` (${load.errors.join('; ')})` : ''}`,
    );
  };

  for (const concurrency of [p.recordings, p.upstreamConcurrency]) {
    const recs = await recordings();
    await measure(
      'upstream direct',
      concurrency,
      recs,
      { origin: ctx.upstream.url, headers: upstreamHeaders(ctx) },
      recs.map((rec) => upstreamPath(ctx, rec)),
    );
  }
  let hwm = Number.NaN;
  // Two workers split the cap, as a user keeping to Twilio's limit would set it: `--upstream-concurrency` is
  // per process.
  const configurations: Array<{ workers: number; name?: string; scratchRoot?: string }> = [
    { workers: 1 },
    { workers: 2 },
    ...(inMemory === undefined ? [] : [{ workers: 1, name: IN_MEMORY, scratchRoot: inMemory }]),
  ];
  for (const { workers, name, scratchRoot } of configurations) {
    const peer = await ctx.startRecgate({
      workers,
      ...(name === undefined ? {} : { name }),
      ...(scratchRoot === undefined ? {} : { scratchRoot }),
      extraArgs: [
        '--upstream-concurrency',
        String(slotsPerWorker(p, workers)),
        '--upstream-queue-max',
        String(p.recordings),
      ],
    });
    try {
      const recs = await recordings();
      const paths: string[] = [];
      for (const rec of recs) paths.push(await peer.prepare(rec));
      const pids = peer.servingPids();
      await measure(
        name ?? `recgate ${workers}w`,
        p.recordings,
        recs,
        { origin: peer.origin, headers: peer.headers },
        paths,
        pids,
        peer.syncIoOff,
      );
      if (name === undefined && workers === 1) hwm = readMemory(pids[0]!)?.hwm ?? Number.NaN;
    } finally {
      await peer.stop();
    }
  }

  const find = (name: string, concurrency: number) =>
    runs.find((r) => r.peer === name && r.concurrency === concurrency);
  const capped = find('upstream direct', p.upstreamConcurrency);
  const columns = [
    'peer',
    'clients at once',
    'ok / checked',
    'all done',
    'TTLB p50',
    'TTLB p99',
    '÷ upstream at the same cap',
    'upstream req',
    'recordings not fetched once',
    'upstream bytes',
    'peak RSS',
    'server CPU',
    'CPU per download',
    'emulator CPU',
    'load generator CPU',
    'sync I/O off',
  ];
  const rows = runs.map((r) => [
    r.peer,
    String(r.concurrency),
    `${r.load.ok}/${r.load.requests}, ${r.load.verified - r.load.mismatched}/${r.load.verified}`,
    fmtMs(r.load.elapsedMs),
    fmtMs(r.load.ttlbMs.p50),
    fmtMs(r.load.ttlbMs.p99),
    r.peer.startsWith('recgate') ? ratio(r.load.elapsedMs, capped?.load.elapsedMs) : '',
    String(r.upstreamRequests),
    String(r.notOnce),
    fmtBytes(r.upstreamBytes),
    r.peakRss === undefined ? '' : MiB(r.peakRss),
    cores(r.cpuSeconds, r),
    r.cpuSeconds === undefined ? '' : `${fmtNum((r.cpuSeconds / r.load.requests) * 1000, 1)} ms`,
    cores(r.emulatorCpuSeconds, r),
    cores(r.loadgenCpuSeconds, r),
    r.syncIoOff === undefined ? '' : String(r.syncIoOff),
  ]);
  const targets: TargetCheck[] = [];
  const mine = find('recgate 1w', p.recordings);
  if (mine) {
    const ok = mine.load.failed === 0 && mine.load.mismatched === 0;
    targets.push({
      target: `${p.recordings} distinct cold recordings at once: exactly ${p.recordings} upstream requests, every client served`,
      measured: `${mine.upstreamRequests} requests (${mine.notOnce} recordings fetched other than once), ${mine.load.ok}/${mine.load.requests} ok`,
      met: ok && mine.upstreamRequests === p.recordings && mine.notOnce === 0,
    });
    targets.push({
      target: `${p.recordings} distinct cold recordings: throughput bounded by the upstream (total time within 1.25× the upstream's own at the same concurrency)`,
      measured: `recgate ${fmtMs(mine.load.elapsedMs)}, upstream ${p.upstreamConcurrency} at a time ${fmtMs(capped?.load.elapsedMs)} (${ratio(mine.load.elapsedMs, capped?.load.elapsedMs)})`,
      met: capped === undefined ? null : ok && mine.load.elapsedMs <= 1.25 * capped.load.elapsedMs,
    });
    targets.push({
      target: `${p.recordings} distinct cold recordings: one recgate worker under ${MiB(p.memoryLimit)} RSS`,
      measured: `peak RSS ${MiB(mine.peakRss ?? Number.NaN)}, VmHWM ${MiB(hwm)}`,
      met: Number.isFinite(hwm) ? hwm < p.memoryLimit && ok : null,
    });
  }
  return {
    id: 'many',
    title: 'Many distinct cold recordings',
    notes,
    columns,
    rows,
    targets,
    charts: [
      {
        title: `${p.recordings} distinct cold ${sizeLabel(p.size)} recordings at once: time until every client is done`,
        unit: 'ms',
        groups: ['all done'],
        series: runs.map((r) => ({
          name: `${r.peer} (${r.concurrency} at once)`,
          values: [r.load.elapsedMs],
        })),
      },
    ],
    data: { params: p, hwm, runs },
  };
}
