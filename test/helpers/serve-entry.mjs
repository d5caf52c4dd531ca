// `recgate serve` with test-only controls for `--workers`: RECGATE_TEST_PRIMARY_OPTIONS (JSON PrimaryOptions of
// src/cli/cluster.ts, e.g. short restart delays) and RECGATE_TEST_WORKER_DIES_AFTER_MS (each worker SIGKILLs
// itself that long after it listens: a crash loop on demand). Cluster workers re-run this file.
//
// JavaScript, so that it runs without tsx: under `npm run test:unit` (RECGATE_TEST_BUILT=1, see
// test/helpers/recgate-command.ts) it runs the dist/ that test/run.ts built from this tree; otherwise the
// sources, and its parent starts it with `--import tsx`.
import cluster from 'node:cluster';

const { main } = await import(
  process.env.RECGATE_TEST_BUILT === '1' ? '../../dist/cli/main.js' : '../../src/cli/main.ts'
);
const primary = JSON.parse(process.env.RECGATE_TEST_PRIMARY_OPTIONS ?? '{}');
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
