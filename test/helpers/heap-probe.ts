/**
 * The test's side of heap-probe.mjs: the environment that loads it into a recgate process (its cluster workers
 * too), and the reading of one process's memory after full garbage collections.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { until } from './common.js';

const PROBE = fileURLToPath(new URL('./heap-probe.mjs', import.meta.url));

/** What heap-probe.mjs writes: process.memoryUsage() after the collections. */
export interface HeapReading {
  pid: number;
  heapUsed: number;
  /** Of `heapUsed`, the compiled code (V8's code spaces): the optimizer's output, which varies run to run. */
  codeBytes: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  rss: number;
}

/** The environment that loads the probe, writing to `dir`; a process started with it answers {@link heapAfterGc}. */
export function heapProbeEnv(dir: string): Record<string, string> {
  const inherited = process.env.NODE_OPTIONS;
  return {
    // Quoted: NODE_OPTIONS splits at spaces, and a checkout's path may have one.
    NODE_OPTIONS: `${inherited === undefined || inherited === '' ? '' : `${inherited} `}--import "${PROBE}"`,
    RECGATE_HEAP_PROBE_DIR: dir,
  };
}

/**
 * Asks process `pid` (started with {@link heapProbeEnv}'s `dir`) to collect its garbage, and returns its memory
 * then. The process must be idle enough to run a handler within `timeoutMs`.
 */
export async function heapAfterGc(dir: string, pid: number, timeoutMs = 10_000): Promise<HeapReading> {
  const prefix = `heap-probe-${pid}-`;
  const earlier = (await readdir(dir)).filter((f) => f.startsWith(prefix) && f.endsWith('.json')).length;
  const file = join(dir, `${prefix}${earlier + 1}.json`);
  process.kill(pid, 'SIGUSR2');
  let reading: HeapReading | undefined;
  await until(
    `process ${pid}'s heap reading`,
    async () => {
      reading = await readFile(file, 'utf8').then(
        (text) => JSON.parse(text) as HeapReading,
        () => undefined,
      );
      return reading !== undefined;
    },
    timeoutMs,
  );
  return reading!;
}
