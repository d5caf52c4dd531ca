/**
 * Runs the fault tests (test/faults/*.test.ts) with more repetitions or another seed than `npm test` does:
 *
 *   npm run test:faults -- --repeat 20 --seed 7 [--only lock-session]
 *
 * `--repeat` sets FAULT_REPEAT (each test's repetition count), `--seed` sets FAULT_SEED, `--only` keeps the
 * test files whose name contains the word. The exit status is node --test's.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: { repeat: { type: 'string' }, seed: { type: 'string' }, only: { type: 'string' } },
});
const env = { ...process.env };
if (values.repeat !== undefined) env.FAULT_REPEAT = values.repeat;
if (values.seed !== undefined) env.FAULT_SEED = values.seed;
const files = readdirSync(here)
  .filter((name) => name.endsWith('.test.ts') && (values.only === undefined || name.includes(values.only)))
  .sort()
  .map((name) => join(here, name));
if (files.length === 0) {
  process.stderr.write(`no fault test matches ${values.only}\n`);
  process.exit(2);
}
process.stdout.write(
  `fault tests: repeat ${env.FAULT_REPEAT ?? 'default'}, seed ${env.FAULT_SEED ?? 'default'}, ${files.length} files\n`,
);
const run = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { stdio: 'inherit', env },
);
process.exit(run.status ?? 1);
