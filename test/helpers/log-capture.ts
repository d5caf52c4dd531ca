/** A logger whose JSON lines a test reads back. */
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { createLogger } from '../../src/observability/logger.js';

/** A pino logger at `level` and the lines it has written so far, whole lines only. */
export function captureLogs(level: string): { logger: Logger; lines: string[] } {
  const sink = new PassThrough();
  const lines: string[] = [];
  let partial = '';
  sink.on('data', (chunk: Buffer) => {
    const split = (partial + chunk.toString()).split('\n');
    partial = split.pop() ?? '';
    lines.push(...split.filter(Boolean));
  });
  return { logger: createLogger({ level, destination: sink }), lines };
}
