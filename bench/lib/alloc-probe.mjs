// A diagnostic, not part of any scenario: load it into a recgate process to count what a stretch of its work
// allocates in JavaScript, garbage included. `bench/profile.ts range --alloc` loads it and drives it; by hand:
//
//   node --import $PWD/bench/lib/alloc-probe.mjs bin/recgate.js serve …
//   kill -USR2 PID   # starts V8's sampling heap profiler; writes alloc-probe-PID.started
//   …load…
//   kill -USR2 PID   # stops it; writes alloc-probe-PID.heapprofile (opens in Chrome DevTools)
//
// Files go to RECGATE_ALLOC_PROBE_DIR (default the OS's temporary folder). Objects that either collector
// freed before the stop are kept in the profile: it counts allocation, not what survived, which is what the
// garbage collector's work follows. One sample per 1 KiB allocated on average. JavaScript, so that the built
// recgate loads it without tsx.
import { renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = join(process.env.RECGATE_ALLOC_PROBE_DIR ?? tmpdir(), `alloc-probe-${process.pid}`);
const session = new Session();
session.connect();
let sampling = false;

process.on('SIGUSR2', () => {
  if (!sampling) {
    sampling = true;
    session.post(
      'HeapProfiler.startSampling',
      {
        samplingInterval: 1024,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: true,
      },
      (err) => {
        if (err) process.stderr.write(`alloc-probe: ${err.message}\n`);
        else writeFileSync(`${base}.started`, '');
      },
    );
    return;
  }
  sampling = false;
  session.post('HeapProfiler.stopSampling', (err, result) => {
    if (err) process.stderr.write(`alloc-probe: ${err.message}\n`);
    else {
      // Written aside, then renamed: whoever waits for the file never reads half of it.
      writeFileSync(`${base}.heapprofile.tmp`, JSON.stringify(result.profile));
      renameSync(`${base}.heapprofile.tmp`, `${base}.heapprofile`);
    }
  });
});
