// The CLI from source, like cli-entry.ts, with test-only controls for `recgate serve --workers`:
// RECGATE_TEST_PRIMARY_OPTIONS (JSON PrimaryOptions, e.g. short restart delays) and
// RECGATE_TEST_WORKER_DIES_AFTER_MS (each worker SIGKILLs itself that long after it listens: a crash loop
// on demand). Cluster workers re-run this file.
import cluster from 'node:cluster';
import type { PrimaryOptions } from '../../src/cli/cluster.js';
import { main } from '../../src/cli/main.js';

const primary = JSON.parse(process.env.RECGATE_TEST_PRIMARY_OPTIONS ?? '{}') as PrimaryOptions;
const diesAfterMs = process.env.RECGATE_TEST_WORKER_DIES_AFTER_MS;

main(process.argv, { serve: { primary } }).then(
  () => {
    // In a worker, main() resolves once the gateway listens.
    if (cluster.isWorker && diesAfterMs !== undefined) {
      setTimeout(() => process.kill(process.pid, 'SIGKILL'), Number(diesAfterMs));
    }
  },
  (err) => {
    process.stderr.write(`recgate: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
