/**
 * Profiles one recgate worker under one warm workload, for finding hot spots when a target is missed:
 *
 *   node --import tsx bench/profile.ts range|full [--alloc] [--floor] [--seconds 8] [--connections 64] [--out DIR]
 *
 * Runs recgate (built dist/) against an unthrottled emulator and drives it with wrk. By default recgate runs
 * with `node --cpu-prof`, and this prints the profile's heaviest functions (self and inclusive time); the
 * .cpuprofile opens in Chrome DevTools or speedscope. With `--alloc` it loads `lib/alloc-probe.mjs` instead,
 * samples what the measured run allocates in JavaScript (garbage included) after a 2 s warm-up, and prints the
 * bytes per request, overall and by function (self and inclusive); the .heapprofile opens in Chrome DevTools.
 * Allocation varies far less between runs than CPU time on a shared machine, so it can show a small change.
 * With `--floor` it profiles the warm scenario's Fastify floor (`lib/floor-server.ts`) under the same load
 * instead: beside recgate's, its profile shows which costs are recgate's own and which Node's and Fastify's.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startEmulator } from '../src/emulator/index.js';
import { newRecording, writeRecordingFile } from './lib/context.js';
import { runLoad } from './lib/loadgen.js';
import { findBinary, type Peer, scratchDir, startFastifyFloor, startRecgate } from './lib/peers.js';
import { summarizeAllocations, summarizeProfile } from './lib/profile-summary.js';
import { runWrk } from './lib/wrk.js';

/** Resolves once `file` exists, polling; rejects after `ms`. */
async function appears(file: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const ALLOC_PROBE = fileURLToPath(new URL('./lib/alloc-probe.mjs', import.meta.url));

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      alloc: { type: 'boolean', default: false },
      floor: { type: 'boolean', default: false },
      seconds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '64' },
      out: { type: 'string' },
    },
  });
  const kind = positionals[0];
  if (kind !== 'range' && kind !== 'full')
    throw new Error(
      'usage: bench/profile.ts range|full [--alloc] [--floor] [--seconds N] [--connections N] [--out DIR]',
    );
  const wrk = findBinary('wrk');
  if (!wrk) throw new Error('wrk is required: apt-get install -y wrk');
  const out = values.out ? path.resolve(values.out) : await scratchDir('profile');
  await mkdir(out, { recursive: true });
  const emulator = await startEmulator({ port: 0, logger: false });
  const upstream = { url: emulator.url, accountSid: emulator.accountSid, authToken: emulator.authToken };
  // The probe writes where the recgate process is told to; startRecgate passes this environment on.
  if (values.alloc) process.env.RECGATE_ALLOC_PROBE_DIR = out;
  const nodeFlags = values.alloc ? ['--import', ALLOC_PROBE] : ['--cpu-prof', `--cpu-prof-dir=${out}`];
  const rec = await newRecording({ emulator }, 5_000_000);
  let peer: Peer;
  if (values.floor) {
    const filesDir = path.join(out, 'files');
    await mkdir(filesDir, { recursive: true });
    await writeRecordingFile({ upstream }, rec, filesDir);
    peer = await startFastifyFloor({ filesDir, nodeFlags });
  } else {
    peer = await startRecgate({ workers: 1, upstream, nodeFlags });
  }
  let summary: string;
  try {
    const reqPath = await peer.prepare(rec);
    const warm = await runLoad({
      origin: peer.origin,
      path: reqPath,
      headers: peer.headers,
      concurrency: 1,
      size: rec.size,
      sha256: rec.sha256,
    });
    if (warm.failed > 0)
      throw new Error(`${peer.name} did not serve the recording: ${warm.errors.join('; ')}`);
    const load = (durationS: number) =>
      runWrk({
        binary: wrk,
        origin: peer.origin,
        path: reqPath,
        headers: peer.headers,
        connections: Number(values.connections),
        durationS,
        rangeBytes: kind === 'range' ? 65_536 : undefined,
        size: rec.size,
        scratchDir: out,
      });
    const pid = peer.servingPids()[0]!;
    const probe = path.join(out, `alloc-probe-${pid}`);
    if (values.alloc) {
      // Compiled code allocates differently from cold code: sample only once the path is warm.
      await load(2);
      process.kill(pid, 'SIGUSR2');
      await appears(`${probe}.started`);
    }
    const r = await load(Number(values.seconds));
    process.stdout.write(
      `${kind}: ${r.reqPerS.toFixed(0)} req/s, ${(r.bytesPerS / 1e9).toFixed(2)} GB/s, p99 ${r.latencyP99Ms.toFixed(1)} ms\n`,
    );
    if (values.alloc) {
      process.kill(pid, 'SIGUSR2');
      await appears(`${probe}.heapprofile`);
      const profile = JSON.parse(await readFile(`${probe}.heapprofile`, 'utf8'));
      summary = `${probe}.heapprofile\n${summarizeAllocations(profile, r.requests)}`;
    }
  } finally {
    await peer.stop();
    await emulator.close();
  }
  if (!values.alloc) {
    const file = (await readdir(out)).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no profile written to ${out}`);
    summary = `${path.join(out, file)}\n${summarizeProfile(JSON.parse(await readFile(path.join(out, file), 'utf8')))}`;
  }
  process.stdout.write(`${summary!}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`profile: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
