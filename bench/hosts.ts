/**
 * `npm run bench:hosts [-- --clients 300 --hosts 3 --workers 2 --size 5000000]`: several recgate hosts on one
 * PostgreSQL (call log and download locks) and one data dir (the shared volume), against nginx and Varnish
 * run as as many independent instances (each with its own cache, as they would be on separate hosts).
 *
 * For each peer, a fresh cold recording and `--clients` clients at once, spread round-robin over the
 * instances as a load balancer would. recgate's first stampede is the first traffic after its start (what
 * an operator sees after a deploy), and a second stampede on another recording shows the steady state. The
 * table gives upstream media requests (recgate: exactly 1), time to first byte p50/p99 over all clients and
 * the worst instance's p99, each beside the upstream's own first-byte time measured right before.
 * The emulator runs in this process at `--ttfb-ms` and `--bandwidth`; the clients run in their own process
 * (bench/lib/loadgen.ts). PostgreSQL is the test server (RECGATE_TEST_POSTGRES_URL or 127.0.0.1:5432/test).
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startEmulator } from '../src/emulator/index.js';
import { newRecording, upstreamHeaders, upstreamPath } from './lib/context.js';
import type { LoadResult } from './lib/loadgen.js';
import { loadgenPriorityNote, startLoadgen } from './lib/loadgen.js';
import { ensureBinary, type Peer, scratchDir, startNginx, startRecgate, startVarnish } from './lib/peers.js';
import { fmtMs, summarize } from './lib/stats.js';
import { ensureBuild } from './run.js';

export interface HostsOptions {
  /** Instances per peer. @default 3 */
  hosts?: number;
  /** recgate workers per instance. @default 2 */
  workers?: number;
  /** Clients of one stampede, spread over the instances. @default 300 */
  clients?: number;
  /** Recording size, bytes. @default 5000000 */
  size?: number;
  /** Upstream time to first byte, ms. @default 300 */
  ttfbMs?: number;
  /** Upstream bandwidth per response, bytes/s. @default 4000000 */
  bandwidth?: number;
  /** `dist` runs bin/recgate.js (build it first); `source` runs the TypeScript through tsx. @default 'dist' */
  entry?: 'dist' | 'source';
  postgresUrl: string;
  nginx?: string | undefined;
  varnish?: string | undefined;
  log?: (line: string) => void;
}

export interface HostsRow {
  peer: string;
  upstreamRequests: number;
  /** The upstream's own first-byte time right before this stampede (median of small probes), ms. */
  upstreamTtfbMs: number;
  load: LoadResult;
  /** The worst instance's p99 first byte, ms. */
  worstHostP99Ms: number;
}

/** The target of issue 14: p99 first byte within this many ms of the upstream's. */
export const HOSTS_TARGET_MS = 150;

/** Starts `n` instances at once. */
function startAll(n: number, start: (i: number) => Promise<Peer>): Promise<Peer[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => start(i)));
}

export async function runHostsBench(
  options: HostsOptions,
): Promise<{ rows: HostsRow[]; loadgenNice: number }> {
  const hosts = options.hosts ?? 3;
  const workers = options.workers ?? 2;
  const clients = options.clients ?? 300;
  const size = options.size ?? 5_000_000;
  const log = options.log ?? (() => {});
  const emulator = await startEmulator({ port: 0, logger: false });
  emulator.setThrottle({
    ttfbMs: options.ttfbMs ?? 300,
    bandwidth: options.bandwidth ?? 4_000_000,
    rangeSupport: true,
  });
  const upstream = { url: emulator.url, accountSid: emulator.accountSid, authToken: emulator.authToken };
  const loadgen = await startLoadgen();
  const rows: HostsRow[] = [];
  const schema = `recgate_bench_hosts_${process.pid}_${randomBytes(3).toString('hex')}`;
  const sharedDir = await scratchDir('hosts');
  try {
    const probe = await newRecording({ emulator }, 16_384);
    const stampede = async (name: string, peers: Peer[]) => {
      const rec = await newRecording({ emulator }, size);
      const paths = await Promise.all(peers.map((p) => p.prepare(rec)));
      if (new Set(paths).size !== 1) throw new Error(`${name}: instances disagree on the path`);
      const ref = await loadgen.run({
        origin: upstream.url,
        path: upstreamPath({ upstream }, probe),
        headers: upstreamHeaders({ upstream }),
        concurrency: 3,
        size: probe.size,
      });
      emulator.reset();
      const load = await loadgen.run({
        origin: peers[0]!.origin,
        origins: peers.map((p) => p.origin),
        path: paths[0]!,
        headers: peers[0]!.headers,
        concurrency: clients,
        size,
        sha256: rec.sha256,
        verifySample: 30,
      });
      // Let a fetch still in flight be counted.
      await new Promise((r) => setTimeout(r, 300));
      const row: HostsRow = {
        peer: name,
        upstreamRequests: emulator.stats().media_requests[rec.recording_sid] ?? 0,
        upstreamTtfbMs: ref.ttfbMs.p50,
        load,
        worstHostP99Ms: Math.max(...Object.values(load.ttfbByOrigin ?? {}).map((s) => s.p99)),
      };
      rows.push(row);
      log(
        `  ${name}: upstream ${row.upstreamRequests} req, TTFB p99 ${fmtMs(load.ttfbMs.p99)} ` +
          `(upstream ${fmtMs(row.upstreamTtfbMs)}), worst host p99 ${fmtMs(row.worstHostP99Ms)}, ` +
          `client stall ${fmtMs(load.clientStallMs)}, ` +
          `ok ${load.ok}/${load.requests}${load.failed ? ` (${load.errors.join('; ')})` : ''}`,
      );
      for (const [i, s] of Object.values(load.ttfbByOrigin ?? {}).entries()) {
        log(`    instance ${i + 1}: TTFB p50 ${fmtMs(s.p50)}, p99 ${fmtMs(s.p99)}`);
      }
    };

    const database = `${options.postgresUrl}${options.postgresUrl.includes('?') ? '&' : '?'}schema=${schema}`;
    const label = `recgate ${hosts} hosts × ${workers}w`;
    log(`bench:hosts: starting ${label} on one PostgreSQL and one data dir`);
    const recgates = await startAll(hosts, (i) =>
      startRecgate({
        workers,
        upstream,
        entry: options.entry ?? 'dist',
        name: `recgate host ${i + 1}`,
        // Later flags win: every instance shares the data dir and the database.
        extraArgs: ['--data-dir', sharedDir, '--database', database],
      }),
    );
    try {
      await stampede(`${label}, first stampede after start`, recgates);
      await stampede(`${label}, second stampede`, recgates);
    } finally {
      await Promise.all(recgates.map((p) => p.stop()));
    }
    if (options.nginx) {
      const nginxes = await startAll(hosts, (i) =>
        startNginx({
          binary: options.nginx!,
          mode: 'proxy-long-lock',
          upstream,
          workers: workers,
          name: `nginx ${i + 1}`,
        }),
      );
      try {
        await stampede(`nginx lock (long timeouts) × ${hosts}, ${workers} workers each`, nginxes);
      } finally {
        await Promise.all(nginxes.map((p) => p.stop()));
      }
    } else log('nginx not found: its row is missing');
    if (options.varnish) {
      const varnishes = await startAll(hosts, (i) =>
        startVarnish({ binary: options.varnish!, upstream, storage: '512m', name: `Varnish ${i + 1}` }),
      );
      try {
        await stampede(`Varnish × ${hosts}`, varnishes);
      } finally {
        await Promise.all(varnishes.map((p) => p.stop()));
      }
    } else log('varnishd not found: its row is missing');
  } finally {
    await loadgen.close();
    await emulator.close();
    await rm(sharedDir, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: options.postgresUrl });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
  return { rows, loadgenNice: loadgen.nice };
}

export function renderHostsBench(rows: HostsRow[], loadgenNice: number): string {
  const lines = [
    '| peer | upstream requests | TTFB p50 | TTFB p99 | p99 − upstream | worst instance p99 | ok | client stall |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.peer} | ${r.upstreamRequests} | ${fmtMs(r.load.ttfbMs.p50)} | ${fmtMs(r.load.ttfbMs.p99)} | ` +
        `${fmtMs(r.load.ttfbMs.p99 - r.upstreamTtfbMs)} | ${fmtMs(r.worstHostP99Ms)} | ${r.load.ok}/${r.load.requests} | ` +
        `${fmtMs(r.load.clientStallMs)} |`,
    );
  }
  const upstream = summarize(rows.map((r) => r.upstreamTtfbMs)).p50;
  lines.push(
    '',
    `Upstream first byte (median of the probes before each stampede): ${fmtMs(upstream)}. ` +
      `Target for recgate: exactly 1 upstream request and p99 first byte within ${HOSTS_TARGET_MS} ms of the upstream's.`,
    `${loadgenPriorityNote(loadgenNice)} "client stall" is that longest stall.`,
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      hosts: { type: 'string', default: '3' },
      workers: { type: 'string', default: '2' },
      clients: { type: 'string', default: '300' },
      size: { type: 'string', default: '5000000' },
      'ttfb-ms': { type: 'string', default: '300' },
      bandwidth: { type: 'string', default: '4000000' },
      source: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
    },
  });
  const { findPostgres } = await import('../test/helpers/postgres.js');
  const found = await findPostgres();
  if (!('url' in found)) throw new Error(`bench:hosts needs PostgreSQL: ${found.reason}`);
  const install = !values['no-install'];
  if (!values.source && !values['no-build']) ensureBuild((line) => console.error(line));
  const { rows, loadgenNice } = await runHostsBench({
    hosts: Number(values.hosts),
    workers: Number(values.workers),
    clients: Number(values.clients),
    size: Number(values.size),
    ttfbMs: Number(values['ttfb-ms']),
    bandwidth: Number(values.bandwidth),
    entry: values.source ? 'source' : 'dist',
    postgresUrl: found.url,
    nginx: ensureBinary('nginx', 'nginx', install),
    varnish: ensureBinary('varnishd', 'varnish', install),
    log: (line) => console.error(line),
  });
  console.log(renderHostsBench(rows, loadgenNice));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
