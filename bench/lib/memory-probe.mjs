// A diagnostic, not part of any scenario: load it into the measured recgate process to see what its memory is
// made of. Every 20 ms it samples process.memoryUsage() and keeps each field's peak, and every 500 ms it
// writes them, in MiB, to RECGATE_MEMORY_PROBE_DIR (default the OS's temporary folder) as
// memory-probe-PID.json:
//
//   RECGATE_BENCH_NODE_FLAGS="--import $PWD/bench/lib/memory-probe.mjs" \
//     node --import tsx bench/run.ts many --no-build --no-install --out /tmp/many
//
// The peak RSS the bench reports comes from /proc; this splits it into the V8 heap and the ArrayBuffers
// (Buffers) outside it. JavaScript, so that the built recgate loads it without tsx.
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const file = join(process.env.RECGATE_MEMORY_PROBE_DIR ?? tmpdir(), `memory-probe-${process.pid}.json`);
const peak = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
const MiB = (bytes) => Math.round(bytes / 2 ** 20);

setInterval(() => {
  const now = process.memoryUsage();
  for (const field of Object.keys(peak)) peak[field] = Math.max(peak[field], now[field]);
}, 20).unref();

setInterval(() => {
  const mib = Object.fromEntries(Object.entries(peak).map(([field, bytes]) => [field, MiB(bytes)]));
  writeFileSync(file, `${JSON.stringify({ pid: process.pid, argv: process.argv.slice(1), peakMiB: mib })}\n`);
}, 500).unref();
