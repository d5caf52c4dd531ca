/**
 * Runs the suite (`npm run test:unit`): every test/**\/*.test.ts, each file in its own process as
 * `node --test` does, several files at a time, and the files in {@link ALONE} one at a time once the others
 * are done, because they must not share the machine (each with its reason). Prints the spec report, then the files
 * that took longest and the whole run's time.
 *
 * First it builds dist/ from this tree (`tsc -p tsconfig.build.json`, about 8 s) and sets RECGATE_TEST_BUILT=1,
 * so the `recgate` processes the tests start run that build rather than the sources through tsx
 * (test/helpers/recgate-command.ts). It always builds: a dist/ left from another tree must never be tested.
 *
 *   npm run test:unit [-- [--concurrency N] [file or folder ...]]
 *
 * With files or folders, runs only the test files among or under them (ALONE ones still last, alone).
 * `--concurrency` (default 2, or RECGATE_TEST_CONCURRENCY) is how many of the other files run at once;
 * 1 runs the whole suite one file at a time, as before. On the 2-core CI machine 2 is the most that
 * stays deterministic: at 3, the busiest files' streaming checks failed (a first byte after the download
 * ended). The exit status is 1 if any test failed.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));

/**
 * Files that run alone, and why. Everything else is safe to run beside another file: each test makes its own
 * data directory, listens on a port the OS picks and, on PostgreSQL, works in a schema of its own, and the times
 * they check leave room for a busy machine (the bench and soak smoke runs check bytes, not speed).
 */
const ALONE: Record<string, string> = {
  'test/faults/gateway-killed.test.ts': 'kills a gateway at a chosen count of upstream bytes',
  'test/faults/lock-session.test.ts': "ends a lock's PostgreSQL session at a chosen count of upstream bytes",
  'test/faults/writer-killed.test.ts':
    'kills a worker at chosen moments, some found by spinning on the files',
  'test/http/workers.test.ts':
    '200 clients of 4 workers must each have a first byte before the one-second download ends',
  'test/limits/admission-hosts.test.ts': 'counts the downloads that start within one slot turnover',
  'test/limits/admission.test.ts': 'counts the downloads that start within one slot turnover',
  'test/recordings/admission-postgres.test.ts':
    "counts and ends every recgate admission session on the server (pg_locks), another file's too",
};

function testFiles(under: string): string[] {
  const path = resolve(root, under);
  const stat = statSync(path, { throwIfNoEntry: false });
  if (stat === undefined) {
    process.stderr.write(`no such test file or folder: ${under}\n`);
    process.exit(2);
  }
  if (stat.isFile()) return path.endsWith('.test.ts') ? [path] : [];
  return readdirSync(path, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? testFiles(join(path, entry.name))
      : entry.name.endsWith('.test.ts')
        ? [join(path, entry.name)]
        : [],
  );
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { concurrency: { type: 'string' } },
});
const concurrency = Number(values.concurrency ?? process.env.RECGATE_TEST_CONCURRENCY ?? 2);
if (!Number.isInteger(concurrency) || concurrency < 1) {
  process.stderr.write(`--concurrency must be a whole number of at least 1, not ${values.concurrency}\n`);
  process.exit(2);
}
const files = [...new Set((positionals.length ? positionals : ['test']).flatMap(testFiles))].sort();
if (files.length === 0) {
  process.stderr.write(`no test file under ${positionals.join(', ')}\n`);
  process.exit(2);
}
const name = (file: string) => relative(root, file).split(sep).join('/');
for (const file of Object.keys(ALONE)) {
  if (!statSync(join(root, file), { throwIfNoEntry: false })?.isFile()) {
    process.stderr.write(`test/run.ts lists ${file} in ALONE, but there is no such file\n`);
    process.exit(2);
  }
}
const together = files.filter((file) => !(name(file) in ALONE));
const alone = files.filter((file) => name(file) in ALONE);

/** The time each file's top-level tests took, summed, ms (the process's start-up aside). */
const took = new Map<string, number>();
const started = Date.now();
/** The files with a failed test. */
const failed = new Set<string>();

async function runFiles(batch: string[], at: number): Promise<void> {
  if (batch.length === 0) return;
  const stream = run({ files: batch, concurrency: at });
  stream.on('test:fail', (data: { file?: string }) => {
    process.exitCode = 1;
    failed.add(data.file === undefined ? '(no file)' : name(data.file));
  });
  for (const event of ['test:pass', 'test:fail'] as const) {
    stream.on(event, (data: { file?: string; nesting: number; details: { duration_ms: number } }) => {
      if (data.file === undefined || data.nesting !== 0) return;
      took.set(data.file, (took.get(data.file) ?? 0) + data.details.duration_ms);
    });
  }
  const report = stream.compose(new spec());
  report.pipe(process.stdout, { end: false });
  await new Promise<void>((done, fail) => report.on('end', done).on('error', fail));
}

const seconds = (since: number) => ((Date.now() - since) / 1000).toFixed(0);
const building = Date.now();
try {
  execFileSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
} catch {
  process.stderr.write('the build failed (tsc -p tsconfig.build.json); no test ran\n');
  process.exit(1);
}
process.env.RECGATE_TEST_BUILT = '1';
process.stdout.write(`built dist/ in ${seconds(building)} s\n`);

process.stdout.write(
  `${together.length} test files ${concurrency} at a time, then ${alone.length} alone (test/run.ts, ALONE)\n`,
);
let phase = Date.now();
await runFiles(together, concurrency);
const phases = [`${together.length} files ${concurrency} at a time in ${seconds(phase)} s`];
phase = Date.now();
await runFiles(alone, 1);
if (alone.length > 0) phases.push(`${alone.length} alone in ${seconds(phase)} s`);

const slowest = [...took]
  .map(([file, ms]) => ({ file: name(file), ms }))
  .sort((a, b) => b.ms - a.ms)
  .slice(0, 15);
const width = Math.max(...slowest.map((s) => s.file.length));
process.stdout.write(
  `\nslowest files (their tests' time, start-up aside):\n${slowest
    .map((s) => `  ${s.file.padEnd(width)}  ${(s.ms / 1000).toFixed(1).padStart(6)} s`)
    .join('\n')}\nsuite: ${files.length} files in ${seconds(started)} s (${phases.join(', then ')}), ${
    failed.size === 0 ? 'no test failed' : `a test failed in ${[...failed].sort().join(', ')}`
  }\n`,
);
