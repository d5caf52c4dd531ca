// A test's window on a recgate process's live memory: loaded into it with
// NODE_OPTIONS="--import <this file>" (cluster workers inherit it), it waits for SIGUSR2, then runs full garbage
// collections until the heap stops shrinking and writes process.memoryUsage(), and the heap's compiled code
// apart, to RECGATE_HEAP_PROBE_DIR/heap-probe-PID-N.json (N counts the signals). What survives a full collection is what
// the process keeps: a figure that grows with the requests served is a leak, where RSS also moves with the
// heap's sizing and the allocator's high-water mark. test/soak/fuzz.test.ts reads it; see heapAfterGc there.
//
// JavaScript, so that the built recgate loads it without tsx. The collector is reached through V8's flag, as
// `--expose-gc` is not allowed in NODE_OPTIONS on Node 20.
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const dir = process.env.RECGATE_HEAP_PROBE_DIR;
if (dir !== undefined) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc');
  let count = 0;
  process.on('SIGUSR2', () => {
    const n = ++count;
    // Collect after the handlers that the signal interrupted have finished, and again while a collection
    // still frees something (weak references and finalizers free more on the next one), at most 10 times.
    setImmediate(() => {
      let used = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 10; i++) {
        gc();
        const now = process.memoryUsage().heapUsed;
        if (now >= used) break;
        used = now;
      }
      const file = join(dir, `heap-probe-${process.pid}-${n}.json`);
      // Whole or absent under its name, which the reader polls for.
      // Compiled code apart: how much of it there is depends on what the optimizer did meanwhile, not on what
      // the process keeps.
      const codeBytes = getHeapSpaceStatistics()
        .filter((space) => space.space_name.startsWith('code_'))
        .reduce((sum, space) => sum + space.space_used_size, 0);
      const reading = { pid: process.pid, n, ...process.memoryUsage(), codeBytes };
      writeFileSync(`${file}.tmp`, JSON.stringify(reading));
      renameSync(`${file}.tmp`, file);
    });
  });
}
