/**
 * `npm run bench [-- options]`: runs recgate and its peers (nginx, Varnish, @fastify/static) in one run against
 * the same recgate emulator, prints one table per scenario, and writes bench/results/latest.{json,md,svg}.
 *
 *   node --import tsx bench/run.ts [cold|mixed|seek|many|warm|memory|scaling ...] [--full] [--smoke] [--source]
 *       [--no-build] [--no-install] [--no-wrk] [--out DIR] [--cpu-prof DIR] [--peers PREFIX,...]
 *
 * With no scenario names it runs all seven with the default matrix (about 12 minutes on 2 cores); `--full` runs
 * the whole matrix of the issue; `--smoke` runs tiny sizes in seconds (what the test suite does).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { startEmulator } from '../src/emulator/index.js';
import type { BenchContext, BenchMode, Tools } from './lib/context.js';
import { startLoadgen } from './lib/loadgen.js';
import { binaryVersion, ensureBinary, scratchDir, setPeerFilter, startRecgate } from './lib/peers.js';
import { describeFileSystem, fileSystemOf } from './lib/procfs.js';
import { type RunReport, renderMarkdown, renderSvg, renderText, type ScenarioResult } from './lib/report.js';
import { coldMany } from './scenarios/cold-many.js';
import { coldMixed } from './scenarios/cold-mixed.js';
import { coldSeek } from './scenarios/cold-seek.js';
import { coldStampede } from './scenarios/cold-stampede.js';
import { memory } from './scenarios/memory.js';
import { scaling } from './scenarios/scaling.js';
import { warmThroughput } from './scenarios/warm.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export const SCENARIOS = {
  cold: coldStampede,
  mixed: coldMixed,
  many: coldMany,
  seek: coldSeek,
  warm: warmThroughput,
  memory,
  scaling,
} satisfies Record<string, (ctx: BenchContext) => Promise<ScenarioResult>>;

export type ScenarioId = keyof typeof SCENARIOS;

export interface BenchOptions {
  scenarios: ScenarioId[];
  mode: BenchMode;
  /** @default 'dist' */
  recgateEntry?: 'dist' | 'source';
  /** Where latest.{json,md,svg} go; nothing is written when absent. */
  outDir?: string;
  /** apt-get install nginx, varnish and wrk when missing. @default false */
  installMissing?: boolean;
  /** Fail instead of leaving out nginx or Varnish rows when their binaries are missing. @default false */
  requirePeers?: boolean;
  /** Use wrk for warm throughput when found. @default true */
  useWrk?: boolean;
  /** Write recgate's CPU profiles (node --cpu-prof) here. */
  cpuProfDir?: string;
  /** Stop at the first failing scenario instead of recording the failure and going on. @default false */
  failFast?: boolean;
  /** The command line shown in the outputs. */
  command: string;
  log?: (line: string) => void;
}

function machine(tools: Tools): Record<string, string | number> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown CPU',
    cores: os.availableParallelism(),
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
    os: `${os.type()} ${os.release()}`,
    node: process.versions.node,
    nginx: tools.nginx ? binaryVersion(tools.nginx, ['-v']).replace('nginx version: ', '') : 'nginx not run',
    varnish: tools.varnish
      ? binaryVersion(tools.varnish, ['-V']).replace(/^varnishd \((.*?) revision.*$/, '$1')
      : 'Varnish not run',
    wrk: tools.wrk ? binaryVersion(tools.wrk, ['-v']).replace(/ \[.*$/, '') : 'wrk not used',
    // Servers' data dirs and caches are made here (scratchDir): its file system shapes every cold figure.
    scratchFs: describeFileSystem(fileSystemOf(os.tmpdir())),
  };
}

export async function runBench(options: BenchOptions): Promise<RunReport> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const install = options.installMissing ?? false;
  const tools: Tools = {
    nginx: ensureBinary('nginx', 'nginx', install),
    varnish: ensureBinary('varnishd', 'varnish', install),
    wrk: options.useWrk === false ? undefined : ensureBinary('wrk', 'wrk', install),
  };
  if (options.requirePeers) {
    for (const [name, bin] of [
      ['nginx', tools.nginx],
      ['varnishd', tools.varnish],
    ] as const) {
      if (!bin) throw new Error(`${name} is required here (CI=true) but was not found`);
    }
  }
  const startedAt = new Date();
  const t0 = performance.now();
  const scratch = await scratchDir('run');
  const emulator = await startEmulator({ port: 0, logger: false });
  const loadgen = await startLoadgen();
  const upstream = { url: emulator.url, accountSid: emulator.accountSid, authToken: emulator.authToken };
  const recgateEntry = options.recgateEntry ?? 'dist';
  const nodeFlags = options.cpuProfDir
    ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(options.cpuProfDir)}`]
    : [];
  const ctx: BenchContext = {
    mode: options.mode,
    emulator,
    upstream,
    loadgen,
    tools,
    startRecgate: (recgate) => startRecgate({ ...recgate, upstream, entry: recgateEntry, nodeFlags }),
    scratch,
    log,
  };
  const results: ScenarioResult[] = [];
  try {
    for (const id of options.scenarios) {
      log(`bench: ${id} (${options.mode})`);
      try {
        results.push(await SCENARIOS[id](ctx));
      } catch (err) {
        // One broken scenario must not throw away the others' measurements.
        if (options.failFast) throw err;
        const message = err instanceof Error ? err.message : String(err);
        log(`bench: ${id} failed: ${message}`);
        results.push({
          id,
          title: `${id} (failed)`,
          notes: [`This scenario failed: ${message}`],
          columns: [],
          rows: [],
          targets: [],
          charts: [],
          data: { error: message },
        });
      }
    }
  } finally {
    await loadgen.close();
    await emulator.close();
    await rm(scratch, { recursive: true, force: true });
  }
  const report: RunReport = {
    command: options.command,
    startedAt: startedAt.toISOString(),
    durationS: (performance.now() - t0) / 1000,
    mode: options.mode,
    machine: { ...machine(tools), loadgenNice: loadgen.nice },
    scenarios: results,
  };
  if (options.outDir) {
    await mkdir(options.outDir, { recursive: true });
    await writeFile(path.join(options.outDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(path.join(options.outDir, 'latest.md'), renderMarkdown(report));
    await writeFile(path.join(options.outDir, 'latest.svg'), renderSvg(report));
  }
  return report;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    newest = Math.max(newest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when it is missing or older than src/, so the benchmark measures the current code. */
export function ensureBuild(log: (line: string) => void): void {
  const dist = path.join(ROOT, 'dist');
  if (existsSync(path.join(dist, 'cli/main.js')) && newestMtime(dist) >= newestMtime(path.join(ROOT, 'src')))
    return;
  log('bench: dist/ is missing or older than src/; running npm run build');
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      full: { type: 'boolean', default: false },
      smoke: { type: 'boolean', default: false },
      source: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'no-install': { type: 'boolean', default: false },
      'no-wrk': { type: 'boolean', default: false },
      out: { type: 'string', default: path.join(ROOT, 'bench/results') },
      'cpu-prof': { type: 'string' },
      peers: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const ids = Object.keys(SCENARIOS) as ScenarioId[];
  if (values.help) {
    process.stdout.write(
      `usage: npm run bench [-- ${ids.join('|')} ...] [--full|--smoke] [--source] [--no-build] [--no-install] [--no-wrk] [--out DIR] [--cpu-prof DIR] [--peers recgate,Varnish,...]\n`,
    );
    return;
  }
  for (const p of positionals) {
    if (!ids.includes(p as ScenarioId))
      throw new Error(`unknown scenario "${p}"; choose from ${ids.join(', ')}`);
  }
  if (values.full && values.smoke) throw new Error('--full and --smoke exclude each other');
  // For quick looks while working on one peer; the README's tables come from runs with every peer.
  if (values.peers !== undefined) setPeerFilter(values.peers.split(',').filter(Boolean));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const entry = values.source ? 'source' : 'dist';
  if (entry === 'dist' && !values['no-build']) ensureBuild(log);
  const shown = [
    'npm run bench',
    positionals.length ? `-- ${positionals.join(' ')}` : '',
    values.full ? (positionals.length ? '--full' : '-- --full') : '',
    values.smoke ? (positionals.length || values.full ? '--smoke' : '-- --smoke') : '',
  ]
    .filter(Boolean)
    .join(' ');
  const report = await runBench({
    scenarios: positionals.length ? (positionals as ScenarioId[]) : ids,
    mode: values.full ? 'full' : values.smoke ? 'smoke' : 'default',
    recgateEntry: entry,
    outDir: values.out,
    installMissing: !values['no-install'],
    requirePeers: process.env.CI === 'true',
    useWrk: !values['no-wrk'],
    cpuProfDir: values['cpu-prof'],
    command: shown,
    log,
  });
  const m = report.machine;
  process.stdout.write(
    `\nrecgate bench: ${m.cpu}, ${m.cores} cores, Node ${m.node}, ${m.nginx}, ${m.varnish}, ${m.wrk}; data dirs on ${m.scratchFs}; ${Math.round(report.durationS)} s\n`,
  );
  process.stdout.write(`${renderText(report)}\n`);
  if (values.out)
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), values.out) || '.'}/latest.{json,md,svg}\n`);
  if (report.scenarios.some((s) => s.title.endsWith('(failed)'))) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
