import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, lazyChild } from '../../src/observability/logger.js';

function capture(level: string) {
  const out = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  out.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
  });
  return { logger: createLogger({ level, destination: out }), lines };
}

describe('lazyChild', () => {
  it('makes no child for lines below the level, and one, with its bindings, for the first line logged', async () => {
    const { logger, lines } = capture('warn');
    let children = 0;
    const child = logger.child.bind(logger);
    logger.child = ((...args: Parameters<typeof logger.child>) => {
      children++;
      return child(...args);
    }) as typeof logger.child;
    const log = lazyChild(logger, { reqId: 'r1' });
    log.info({ event: 'quiet' }, 'below the level');
    log.debug('below too');
    assert.equal(children, 0);
    log.warn({ event: 'loud' }, 'logged');
    log.error('again');
    await new Promise((r) => setImmediate(r));
    assert.equal(children, 1, 'one child, made once');
    assert.deepEqual(
      lines.map((l) => [l.reqId, l.event, l.msg]),
      [
        ['r1', 'loud', 'logged'],
        ['r1', undefined, 'again'],
      ],
    );
  });

  it('passes its bindings to its own children, and redacts as its parent does', async () => {
    const { logger, lines } = capture('info');
    const log = lazyChild(logger, { reqId: 'r2' });
    log.child({ callSid: 'CA1' }).info({ authorization: 'Bearer secret' }, 'hello');
    assert.equal(log.isLevelEnabled('info'), true);
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.reqId, 'r2');
    assert.equal(lines[0]!.callSid, 'CA1');
    assert.equal(lines[0]!.authorization, '[Redacted]');
  });
});
