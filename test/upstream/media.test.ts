/**
 * The media helpers: the Range asked for, Content-Range, whether a body ends its connection, and the guard
 * around a body.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it, test } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import { endsWithConnection, guardBody, parseContentRange, rangeHeader } from '../../src/upstream/media.js';

describe('rangeHeader', () => {
  test('asks for a Range only when start or end is given', () => {
    assert.equal(rangeHeader({}), undefined);
    assert.equal(rangeHeader({ start: 100 }), 'bytes=100-');
    assert.equal(rangeHeader({ start: 100, end: 199 }), 'bytes=100-199');
    assert.equal(rangeHeader({ end: 99 }), 'bytes=0-99');
  });

  test('names the bad field of a bad range', () => {
    assert.throws(() => rangeHeader({ start: -1 }), /request\.start must be a non-negative integer/);
    assert.throws(() => rangeHeader({ start: 1.5 }), /request\.start/);
    assert.throws(() => rangeHeader({ start: 10, end: 9 }), /request\.end must be an integer not below/);
  });
});

describe('parseContentRange', () => {
  test('reads first, last and total, or an unknown total', () => {
    assert.deepEqual(parseContentRange('bytes 10-19/100'), { start: 10, end: 19, totalSize: 100 });
    assert.deepEqual(parseContentRange(' bytes 0-0/* '), { start: 0, end: 0, totalSize: null });
  });

  test('is undefined for anything else', () => {
    for (const value of [null, '', 'bytes */100', 'items 0-9/10', 'bytes 0-9', 'bytes=0-9/10']) {
      assert.equal(parseContentRange(value), undefined, String(value));
    }
  });
});

describe('endsWithConnection', () => {
  test('Connection: close, or a body delimited by the close, ends the connection', () => {
    assert.equal(endsWithConnection({ connection: 'close' }, 100), true);
    assert.equal(endsWithConnection({ connection: 'keep-alive, Close' }, 100), true);
    assert.equal(endsWithConnection({}, null), true);
  });

  test('a body with Content-Length or chunked on a kept-alive connection does not', () => {
    assert.equal(endsWithConnection({ connection: 'keep-alive' }, 100), false);
    assert.equal(endsWithConnection({}, 100), false);
    assert.equal(endsWithConnection({ 'transfer-encoding': 'chunked' }, null), false);
  });
});

describe('guardBody', () => {
  const chunks = (n: number, size: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(size, i));
  const broken = () =>
    Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) as Error & { code: string };

  for (const eager of [false, true]) {
    it(`delivers every byte that came before a break, then the error, to a reader that starts late (eager ${eager})`, async () => {
      const source = new PassThrough();
      const body = guardBody(source, 400_000, undefined, eager);
      for (const chunk of chunks(5, 20_000)) source.write(chunk);
      await new Promise((r) => setTimeout(r, 20));
      source.destroy(broken());
      await new Promise((r) => setTimeout(r, 20));
      // The reader only starts now, as a download step still opening its file would.
      let received = 0;
      let said = '';
      await assert.rejects(
        (async () => {
          for await (const chunk of body) received += (chunk as Buffer).length;
        })(),
        (err: unknown) => {
          said = isRecgateError(err) ? err.message : String(err);
          return true;
        },
      );
      // Every byte the guard took in reaches the reader, and the error says how many that was. Read with
      // backpressure, the guard stops taking at 64 KiB queued; what the source still held is the source's.
      assert.equal(said, `The recording download from the provider ended after ${received} of 400000 bytes`);
      assert.equal(received, eager ? 100_000 : 80_000);
    });
  }

  it('ends cleanly at exactly Content-Length, and errors on more', async () => {
    const whole = new PassThrough();
    const body = guardBody(whole, 30_000, undefined, false);
    whole.end(Buffer.alloc(30_000));
    let n = 0;
    for await (const chunk of body) n += (chunk as Buffer).length;
    assert.equal(n, 30_000);
    const long = new PassThrough();
    const over = guardBody(long, 10, undefined, false);
    long.end(Buffer.alloc(11));
    await assert.rejects(
      (async () => {
        for await (const _ of over);
      })(),
      /more than the 10 bytes/,
    );
  });

  it('an abort is delivered at once, whatever is queued', async () => {
    const source = new PassThrough();
    const controller = new AbortController();
    const body = guardBody(source, 100_000, controller.signal, false);
    source.write(Buffer.alloc(10_000));
    controller.abort();
    source.destroy(new Error('aborted'));
    await assert.rejects(
      (async () => {
        for await (const _ of body);
      })(),
      (err: unknown) => (err as Error).name === 'AbortError',
    );
  });
});
