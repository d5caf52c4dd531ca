/**
 * A quick run of the benchmark harness (tiny recordings, a few clients, one-second runs) so that it cannot rot:
 * every scenario runs end to end against recgate (built under `npm run test:unit`, else from source) and, when installed, nginx and Varnish.
 * Nothing here asserts speed; it asserts that every peer served correct bytes and every output renders.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { findBinary } from '../../bench/lib/peers.js';
import { fileSystemOf } from '../../bench/lib/procfs.js';
import { renderMarkdown, renderSvg, renderText } from '../../bench/lib/report.js';
import { runBench } from '../../bench/run.js';
import type { StampedeRow } from '../../bench/scenarios/cold-stampede.js';
import { HARNESS_ENTRY } from '../helpers/recgate-command.js';

const CI = process.env.CI === 'true';
const outDir = path.join(tmpdir(), `recgate-bench-smoke-${process.pid}`);

after(async () => {
  await rm(outDir, { recursive: true, force: true });
});

test('bench harness: smoke run of every scenario', { timeout: 180_000 }, async (t) => {
  const missing = ['nginx', 'varnishd'].filter((b) => !findBinary(b));
  const report = await runBench({
    scenarios: ['cold', 'seek', 'warm', 'memory', 'scaling', 'mixed', 'many'],
    mode: 'smoke',
    recgateEntry: HARNESS_ENTRY,
    outDir,
    installMissing: false,
    requirePeers: CI,
    command: 'smoke test',
    failFast: true,
    log: () => {},
  });
  assert.deepEqual(
    report.scenarios.map((s) => s.id),
    ['cold', 'seek', 'warm', 'memory', 'scaling', 'mixed', 'many'],
  );
  for (const s of report.scenarios) assert.ok(s.rows.length > 0, `${s.id} has rows`);

  const cold = report.scenarios[0]!.data as { runs: StampedeRow[] };
  for (const run of cold.runs) {
    assert.equal(run.load.failed, 0, `${run.peer}: ${run.load.errors.join('; ')}`);
    assert.equal(run.load.mismatched, 0, `${run.peer} served different bytes`);
    assert.ok(run.load.verified > 0, `${run.peer}: bodies were checked`);
    if (run.peer.startsWith('recgate')) {
      assert.equal(run.upstreamRequests, 1, `${run.peer} fetched once`);
      // Read from /metrics before and after the run (the "sync I/O off" column).
      assert.ok(Number.isInteger(run.syncIoOff) && run.syncIoOff! >= 0, `${run.peer}: ${run.syncIoOff}`);
    }
  }
  const peers = new Set(cold.runs.map((r) => r.peer));
  assert.ok(peers.has('recgate 1w') && peers.has('recgate 2w'));

  const memory = report.scenarios[3]!.data as {
    phases: Array<{ load: { failed: number }; peakRss: number }>;
  };
  assert.equal(memory.phases.length, 2);
  for (const phase of memory.phases) {
    assert.equal(phase.load.failed, 0);
    assert.ok(phase.peakRss > 0);
  }

  // The mixed stampede and many distinct recordings (issue 14): every client served, within the upstream bounds.
  const mixed = report.scenarios[5]!.data as {
    params: { size: number };
    runs: Array<{
      peer: string;
      upstreamBytes: number;
      loads: Record<string, { failed: number; mismatched: number; verified: number; errors: string[] }>;
    }>;
  };
  assert.ok(mixed.runs.some((r) => r.peer === 'recgate 2w'));
  for (const run of mixed.runs) {
    for (const [kind, load] of Object.entries(run.loads)) {
      assert.equal(load.failed, 0, `${run.peer} ${kind}: ${load.errors.join('; ')}`);
      assert.equal(load.mismatched, 0, `${run.peer} ${kind} served different bytes`);
      if (kind !== 'HEAD') assert.ok(load.verified > 0, `${run.peer} ${kind}: bodies were checked`);
    }
    if (run.peer.startsWith('recgate')) {
      assert.ok(
        run.upstreamBytes <= 1.1 * mixed.params.size,
        `${run.peer}: ${run.upstreamBytes} upstream bytes`,
      );
    }
  }
  const many = report.scenarios[6]!.data as {
    params: { recordings: number };
    runs: Array<{
      peer: string;
      upstreamRequests: number;
      notOnce: number;
      load: { failed: number };
      cpuSeconds?: number;
      syncIoOff?: number;
    }>;
  };
  const mine = many.runs.find((r) => r.peer === 'recgate 1w');
  assert.ok(mine, 'recgate ran');
  assert.equal(mine.load.failed, 0);
  assert.equal(mine.upstreamRequests, many.params.recordings, 'one upstream request per recording');
  assert.equal(mine.notOnce, 0);
  // The CPU recgate spent on the run, read from /proc (the "CPU per download" column).
  assert.ok(mine.cpuSeconds !== undefined && mine.cpuSeconds > 0, `recgate CPU ${mine.cpuSeconds}`);
  assert.ok(Number.isInteger(mine.syncIoOff) && mine.syncIoOff! >= 0, `sync I/O off ${mine.syncIoOff}`);
  // The same load on two workers sharing the cap: still one upstream request per recording.
  const two = many.runs.find((r) => r.peer === 'recgate 2w');
  assert.ok(two, 'recgate ran with two workers');
  assert.equal(two.load.failed, 0);
  assert.equal(
    two.upstreamRequests,
    many.params.recordings,
    'two workers: one upstream request per recording',
  );
  assert.equal(two.notOnce, 0);
  assert.ok(two.cpuSeconds !== undefined && two.cpuSeconds > 0, `recgate 2w CPU ${two.cpuSeconds}`);
  // One worker again with its data dir on tmpfs, on a machine whose temporary folder is on another file system.
  const inMemory = many.runs.find((r) => r.peer === 'recgate 1w, data dir on tmpfs');
  const tmpfsBeside = fileSystemOf(tmpdir())?.type !== 'tmpfs' && fileSystemOf('/dev/shm')?.type === 'tmpfs';
  assert.equal(
    inMemory !== undefined,
    tmpfsBeside,
    'the in-memory run is there when /dev/shm is a tmpfs beside',
  );
  if (inMemory !== undefined) {
    assert.equal(inMemory.load.failed, 0);
    assert.equal(inMemory.upstreamRequests, many.params.recordings);
    assert.equal(inMemory.notOnce, 0);
  }
  const json = JSON.parse(await readFile(path.join(outDir, 'latest.json'), 'utf8'));
  assert.equal(json.scenarios.length, 7);
  assert.match(
    await readFile(path.join(outDir, 'latest.svg'), 'utf8'),
    /^<svg [^>]*>[\s\S]*<rect[\s\S]*<\/svg>\n$/,
  );
  assert.match(await readFile(path.join(outDir, 'latest.md'), 'utf8'), /### Cold stampede[\s\S]*\| --- \|/);
  assert.ok(renderText(report).includes('== Warm throughput =='));
  assert.ok(renderMarkdown(report).length > 0 && renderSvg(report).length > 0);

  await t.test('nginx and Varnish peers', (st) => {
    if (missing.length > 0) {
      st.skip(
        `${missing.join(' and ')} not installed: apt-get install -y nginx varnish (CI=true requires them)`,
      );
      return;
    }
    for (const name of ['nginx lock (defaults)', 'nginx lock (long timeouts)', 'nginx slice', 'Varnish']) {
      assert.ok(peers.has(name), `${name} ran in the cold stampede`);
    }
    const warm = report.scenarios[2]!.data as { runs: Array<{ peer: string; sample: { errors: number } }> };
    assert.ok(warm.runs.some((r) => r.peer === 'nginx static'));
    for (const r of warm.runs) assert.equal(r.sample.errors, 0, `${r.peer} answered without errors`);
  });
});

test('bench harness: warm throughput with the Node load generator (no wrk)', {
  timeout: 120_000,
}, async () => {
  const report = await runBench({
    scenarios: ['warm'],
    mode: 'smoke',
    recgateEntry: HARNESS_ENTRY,
    installMissing: false,
    useWrk: false,
    command: 'smoke test',
    failFast: true,
    log: () => {},
  });
  const warm = report.scenarios[0]!.data as {
    tool: string;
    runs: Array<{ peer: string; sample: { errors: number; requests: number } }>;
  };
  assert.match(warm.tool, /Node load generator/);
  for (const r of warm.runs) {
    assert.equal(r.sample.errors, 0, `${r.peer} answered without errors`);
    assert.ok(r.sample.requests > 0);
  }
});
