/**
 * Runs the suite (`npm run test:unit`): every test/**\/*.test.ts, each file in its own process as
 * `node --test` does, several files at a time, and the files in {@link ALONE} one at a time once the others
 * are done, because they must not share the machine (each with its reason). Prints the spec report, then the files
 * that took longest, each failed test again with its error (CI keeps only the end of the output), and the whole
 * run's time.
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
import { inspect, parseArgs } from 'node:util';

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

/** A failed test as the summary at the end repeats it (the spec report's own account may be far above it). */
interface Failure {
  file: string;
  name: string;
  error: unknown;
  /** Errors reported outside any test just before this failure (see {@link looseErrors}). */
  loose: string[];
}
const failures: Failure[] = [];
/** Failures the summary repeats in full; the rest are named only. */
const FAILURES_SHOWN = 3;
/** Lines of each failure's error the summary repeats. */
const FAILURE_LINES = 20;
/**
 * Errors the runner reported outside any test's result (an uncaught exception, asynchronous activity after a
 * test ended) since the last top-level result: they fail their file with no more than "test failed". The
 * runner reports them, without a file, just before that failure (each file's report comes in one piece).
 */
let looseErrors: string[] = [];
/** Such errors the summary repeats with a file's failure. */
const FILE_ERRORS_SHOWN = 3;

interface FailEvent {
  file?: string;
  name: string;
  nesting: number;
  details: { duration_ms: number; error?: unknown };
}

/** A suite that failed only because a test in it did adds nothing to that test's own failure. */
function onlySubtests(error: unknown): boolean {
  return (error as { failureType?: unknown } | undefined)?.failureType === 'subtestsFailed';
}

/** What the summary says of one failure: where, which test, and the error with its causes, cut to a few lines. */
function describeFailure(failure: Failure): string {
  // node:test wraps what the test threw (failureType testCodeFailure): the cause is the test's own error.
  const error = failure.error as { failureType?: unknown; cause?: unknown } | undefined;
  const thrown = error?.failureType === 'testCodeFailure' && error.cause !== undefined ? error.cause : error;
  // Node's own frames (the test runner's, promises') say nothing about the failure.
  const lines = inspect(thrown, { depth: 4, breakLength: 120 })
    .split('\n')
    .filter((l) => !/^\s+at (.*\()?(node:|new Promise \(<anonymous>\))/.test(l) || l.endsWith('{'));
  const shown = lines.slice(0, FAILURE_LINES).map((l) => `    ${l}`);
  if (lines.length > FAILURE_LINES) shown.push(`    ... ${lines.length - FAILURE_LINES} more lines`);
  for (const message of failure.loose.slice(0, FILE_ERRORS_SHOWN))
    shown.push(`    ${message.split('\n')[0]}`);
  return `  ✖ ${failure.file}  ${failure.name}\n${shown.join('\n')}`;
}

async function runFiles(batch: string[], at: number): Promise<void> {
  if (batch.length === 0) return;
  const stream = run({ files: batch, concurrency: at });
  stream.on('test:diagnostic', (data: { message: string }) => {
    if (/^Error\b|uncaught|asynchronous activity/i.test(data.message)) looseErrors.push(data.message);
  });
  stream.on('test:fail', (data: FailEvent) => {
    process.exitCode = 1;
    const file = data.file === undefined ? '(no file)' : name(data.file);
    failed.add(file);
    const loose = data.nesting === 0 ? looseErrors : [];
    if (!onlySubtests(data.details.error))
      failures.push({ file, name: data.name, error: data.details.error, loose });
  });
  // After the handler above: a top-level result, passed or failed, takes the loose errors reported before it.
  for (const event of ['test:pass', 'test:fail'] as const) {
    stream.on(event, (data: { file?: string; nesting: number; details: { duration_ms: number } }) => {
      if (data.nesting !== 0) return;
      looseErrors = [];
      if (data.file === undefined) return;
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
    .join('\n')}\n`,
);
if (failures.length > 0) {
  const named = failures.slice(FAILURES_SHOWN).map((f) => `  ✖ ${f.file}  ${f.name}`);
  process.stdout.write(
    `failed tests (${failures.length}), again here so that the end of the output says why:\n${[
      ...failures.slice(0, FAILURES_SHOWN).map(describeFailure),
      ...named,
    ].join('\n')}\n`,
  );
}
process.stdout.write(
  `suite: ${files.length} files in ${seconds(started)} s (${phases.join(', then ')}), ${
    failed.size === 0 ? 'no test failed' : `a test failed in ${[...failed].sort().join(', ')}`
  }\n`,
);
