/**
 * `npm run soak [-- options]`: a mixed load on `recgate serve --workers 2` against a throttled emulator,
 * every response checked; prints latency and throughput per request kind, exits 1 naming what failed.
 *
 *   node --import tsx soak/run.ts [--duration S] [--concurrency N] [--seed S] [--workers N] [--source] [--no-build]
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureBuild } from '../bench/run.js';
import { renderSoak } from './report.js';
import { runSoak } from './soak.js';

const USAGE =
  'usage: npm run soak [-- --duration S (60)] [--concurrency N (16)] [--seed S (1)] [--workers N (2)] [--source] [--no-build]\n';

/** A flag's value as an integer of at least `min`, or an error naming the flag. */
export function integerFlag(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new TypeError(`--${name} must be an integer >= ${min}, not ${JSON.stringify(value)}`);
  }
  return n;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      concurrency: { type: 'string' },
      seed: { type: 'string' },
      workers: { type: 'string' },
      source: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const options = {
    durationS: integerFlag('duration', values.duration, 60, 1),
    concurrency: integerFlag('concurrency', values.concurrency, 16, 1),
    seed: integerFlag('seed', values.seed, 1, 0),
    workers: integerFlag('workers', values.workers, 2, 1),
    entry: values.source ? ('source' as const) : ('dist' as const),
  };
  const log = (line: string) => process.stderr.write(`${line}\n`);
  if (options.entry === 'dist' && !values['no-build']) ensureBuild(log);
  const report = await runSoak({ ...options, log });
  process.stdout.write(renderSoak(report));
  return report.passed ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
