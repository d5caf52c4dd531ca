/**
 * Profiles one recgate worker under one warm workload, for finding hot spots when a target is missed:
 *
 *   node --import tsx bench/profile.ts range|full [--seconds 8] [--connections 64] [--out DIR]
 *
 * Runs `node --cpu-prof` recgate (built dist/) against an unthrottled emulator, drives it with wrk, and prints the
 * profile's heaviest functions (self and inclusive time); the .cpuprofile opens in Chrome DevTools or speedscope.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startEmulator } from '../src/emulator/index.js';
import { newRecording } from './lib/context.js';
import { runLoad } from './lib/loadgen.js';
import { findBinary, scratchDir, startRecgate } from './lib/peers.js';
import { runWrk } from './lib/wrk.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The heaviest functions of a V8 CPU profile by self and by inclusive time, as text. */
export function summarizeProfile(
  profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] },
  top = 25,
): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const time = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    time.set(id, (time.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...time.values()].reduce((a, b) => a + b, 0);
  const label = (n: ProfileNode) =>
    `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(node_modules|dist|src)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, t] of time) {
    self.set(label(byId.get(id)!), (self.get(label(byId.get(id)!)) ?? 0) + t);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const key = label(byId.get(cur)!);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + t);
    }
  }
  const list = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, t]) => `${((100 * t) / total).toFixed(1).padStart(6)}%  ${k}`)
      .join('\n');
  return `${(total / 1e6).toFixed(1)} s sampled\n-- self time\n${list(self)}\n-- inclusive time\n${list(inclusive)}`;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '64' },
      out: { type: 'string' },
    },
  });
  const kind = positionals[0];
  if (kind !== 'range' && kind !== 'full')
    throw new Error('usage: bench/profile.ts range|full [--seconds N] [--connections N] [--out DIR]');
  const wrk = findBinary('wrk');
  if (!wrk) throw new Error('wrk is required: apt-get install -y wrk');
  const out = values.out ? path.resolve(values.out) : await scratchDir('profile');
  await mkdir(out, { recursive: true });
  const emulator = await startEmulator({ port: 0, logger: false });
  const upstream = { url: emulator.url, accountSid: emulator.accountSid, authToken: emulator.authToken };
  const peer = await startRecgate({
    workers: 1,
    upstream,
    nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${out}`],
  });
  try {
    const rec = await newRecording({ emulator } as Parameters<typeof newRecording>[0], 5_000_000);
    const reqPath = await peer.prepare(rec);
    const warm = await runLoad({
      origin: peer.origin,
      path: reqPath,
      headers: peer.headers,
      concurrency: 1,
      size: rec.size,
      sha256: rec.sha256,
    });
    if (warm.failed > 0) throw new Error(`recgate did not serve the recording: ${warm.errors.join('; ')}`);
    const r = await runWrk({
      binary: wrk,
      origin: peer.origin,
      path: reqPath,
      headers: peer.headers,
      connections: Number(values.connections),
      durationS: Number(values.seconds),
      rangeBytes: kind === 'range' ? 65_536 : undefined,
      size: rec.size,
      scratchDir: out,
    });
    process.stdout.write(
      `${kind}: ${r.reqPerS.toFixed(0)} req/s, ${(r.bytesPerS / 1e9).toFixed(2)} GB/s, p99 ${r.latencyP99Ms.toFixed(1)} ms\n`,
    );
  } finally {
    await peer.stop();
    await emulator.close();
  }
  const file = (await readdir(out)).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error(`no profile written to ${out}`);
  process.stdout.write(
    `${path.join(out, file)}\n${summarizeProfile(JSON.parse(await readFile(path.join(out, file), 'utf8')))}\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`profile: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
