#!/usr/bin/env -S node --max-semi-space-size=4
// --max-semi-space-size=4 caps V8's young generation at 4 MiB per semi-space (Node's default is 16): under
// hundreds of concurrent streams the default let the heap swell by ~50 MiB of short-lived garbage. Measured
// with `npm run bench:memory` (200 clients x 50 MB): peak RSS 150-202 MiB over four runs by default,
// 135-151 MiB over seven with the cap, and no change in `npm run bench:warm`. To measure the default again:
// `RECGATE_BENCH_NODE_FLAGS=--max-semi-space-size=16 npm run bench:memory`. Cluster workers inherit the
// flag from the primary's execArgv.
import { main } from '../dist/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`recgate: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
