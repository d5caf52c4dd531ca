import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { andThen, finallyAfter } from '../../src/io/now-or-later.js';

describe('now or later', () => {
  it('andThen runs the next step at once on a value, after the promise on a promise', async () => {
    const order: string[] = [];
    const now = andThen(2, (v) => {
      order.push('now');
      return v * 3;
    });
    assert.equal(now, 6, 'a value, not a promise');
    const later = andThen(Promise.resolve(2), (v) => {
      order.push('later');
      return v * 3;
    });
    assert.ok(later instanceof Promise);
    order.push('after the call');
    assert.equal(await later, 6);
    assert.deepEqual(order, ['now', 'after the call', 'later']);
    assert.equal(await andThen(1, (v) => Promise.resolve(v + 1)), 2, 'a step may start waiting');
  });

  it('andThen: a throw is thrown on a value, a rejection on a promise, and skips the next step', async () => {
    const boom = new Error('boom');
    assert.throws(
      () =>
        andThen(1, () => {
          throw boom;
        }),
      boom,
    );
    await assert.rejects(
      andThen(Promise.resolve(1), () => {
        throw boom;
      }) as Promise<never>,
      boom,
    );
    let ran = false;
    await assert.rejects(
      andThen(Promise.reject(boom), () => {
        ran = true;
      }) as Promise<void>,
      boom,
    );
    assert.equal(ran, false);
  });

  it('finallyAfter cleans up once, when the step is settled, and keeps its outcome', async () => {
    let cleaned = 0;
    const cleanup = () => cleaned++;
    assert.equal(
      finallyAfter(() => 'value', cleanup),
      'value',
    );
    assert.equal(cleaned, 1, 'at once after a value');
    const boom = new Error('boom');
    assert.throws(
      () =>
        finallyAfter(() => {
          throw boom;
        }, cleanup),
      boom,
    );
    assert.equal(cleaned, 2, 'at once after a throw');
    let resolve!: (v: string) => void;
    const pending = finallyAfter(() => new Promise<string>((r) => (resolve = r)), cleanup);
    await Promise.resolve();
    assert.equal(cleaned, 2, 'not while the promise waits');
    resolve('later');
    assert.equal(await pending, 'later');
    assert.equal(cleaned, 3);
    await assert.rejects(finallyAfter(() => Promise.reject(boom), cleanup) as Promise<never>, boom);
    assert.equal(cleaned, 4, 'after a rejection too');
  });
});
