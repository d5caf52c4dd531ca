/** The media helpers' pure parts: the Range asked for, Content-Range, and whether a body ends its connection. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { endsWithConnection, parseContentRange, rangeHeader } from '../../src/upstream/media.js';

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
