/** A logger whose JSON lines a test reads back. */
import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { createLogger } from '../../src/observability/logger.js';

/** What {@link captureLogs} gives: the logger, and what it has written so far (whole lines only). */
export interface CapturedLogs {
  logger: Logger;
  /** Each line as written. */
  lines: string[];
  /** The same lines, parsed. */
  records: Array<Record<string, unknown>>;
  /** The `event` field of each record that has one, in order. */
  events(): string[];
}

export interface CaptureOptions {
  /** @default 'debug' */
  level?: string;
  /**
   * A plain pino logger, as an embedding host may pass one: no redaction, which a test of what the code itself
   * puts in its lines needs. @default false: the gateway's own (`createLogger`), which redacts.
   */
  plain?: boolean;
}

/**
 * A logger whose lines are read back as they are written: pino writes to this sink synchronously, so a line
 * is there when the call that logs it returns.
 */
export function captureLogs(options: CaptureOptions = {}): CapturedLogs {
  const level = options.level ?? 'debug';
  const lines: string[] = [];
  const records: Array<Record<string, unknown>> = [];
  let partial = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const split = (partial + chunk.toString('utf8')).split('\n');
      partial = split.pop() ?? '';
      for (const line of split) {
        if (line === '') continue;
        lines.push(line);
        records.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const logger = options.plain ? pino({ level }, sink) : createLogger({ level, destination: sink });
  return {
    logger,
    lines,
    records,
    events: () => records.map((r) => r.event).filter((e): e is string => typeof e === 'string'),
  };
}
