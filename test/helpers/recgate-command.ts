/**
 * How a test starts the recgate CLI in a child process. `npm run test:unit` (test/run.ts) builds dist/ from
 * this tree before any test and sets RECGATE_TEST_BUILT=1; children then run that build, as users run
 * `recgate`. A test file run on its own (`node --import tsx --test FILE`) runs the sources through tsx.
 *
 * Why: through tsx, a `recgate` process spends about 1 s more CPU before it does anything (`--help`: 1.1–1.3 s
 * wall and 1.6–1.9 s CPU, against 0.6 s and 0.7 s built), and the suite spawns it about a hundred times, two
 * files at a time on two cores.
 */
import { fileURLToPath } from 'node:url';

/** Set by test/run.ts once dist/ is built from this tree; never by hand, or a stale dist/ would be tested. */
const BUILT = process.env.RECGATE_TEST_BUILT === '1';

/** How the bench and soak harnesses (their `entry` option) should start recgate: the build when there is one. */
export const HARNESS_ENTRY: 'dist' | 'source' = BUILT ? 'dist' : 'source';

const BIN = fileURLToPath(new URL('../../bin/recgate.js', import.meta.url));
const CLI_ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url));
const SERVE_ENTRY = fileURLToPath(new URL('./serve-entry.mjs', import.meta.url));

/**
 * Node arguments that run `recgate …` (the subcommand and its options follow). With `testControls`, the entry
 * that also reads RECGATE_TEST_PRIMARY_OPTIONS and RECGATE_TEST_WORKER_DIES_AFTER_MS (serve-entry.mjs); it
 * needs RECGATE_TEST_BUILT in the child's environment.
 */
export function recgateArgs(options: { testControls?: boolean } = {}): string[] {
  if (options.testControls) return BUILT ? [SERVE_ENTRY] : ['--import', 'tsx', SERVE_ENTRY];
  return BUILT ? [BIN] : ['--import', 'tsx', CLI_ENTRY];
}
