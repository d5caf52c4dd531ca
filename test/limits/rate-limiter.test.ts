import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RateLimiter } from '../../src/limits/rate-limiter.js';

describe('RateLimiter', () => {
  it('allows a burst, then one request per 1/rate seconds, and names the wait', () => {
    let t = 0;
    const limiter = new RateLimiter({ ratePerS: 2, burst: 3, now: () => t });
    for (let i = 0; i < 3; i++) assert.deepEqual(limiter.take('a'), { ok: true });
    assert.deepEqual(limiter.take('a'), { ok: false, retryAfterS: 1 });
    t += 499;
    assert.equal(limiter.take('a').ok, false);
    t += 2;
    assert.deepEqual(limiter.take('a'), { ok: true });
    assert.equal(limiter.take('a').ok, false);
  });

  it('keeps keys apart', () => {
    const limiter = new RateLimiter({ ratePerS: 1, burst: 1, now: () => 0 });
    assert.equal(limiter.take('a').ok, true);
    assert.equal(limiter.take('a').ok, false);
    assert.equal(limiter.take('b').ok, true);
  });

  it('rounds a long wait up to whole seconds', () => {
    const limiter = new RateLimiter({ ratePerS: 0.1, burst: 1, now: () => 0 });
    limiter.take('a');
    assert.deepEqual(limiter.take('a'), { ok: false, retryAfterS: 10 });
  });

  it('forgets refilled buckets and stays within maxKeys', () => {
    let t = 0;
    const limiter = new RateLimiter({ ratePerS: 1, burst: 2, maxKeys: 10, now: () => t });
    for (let i = 0; i < 100; i++) limiter.take(`k${i}`);
    assert.ok(limiter.size <= 11, `size ${limiter.size}`);
    t += 10_000;
    limiter.take('last');
    assert.equal(limiter.size, 1);
  });

  it('never allows more than burst + rate × elapsed for one key (property)', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.1, max: 50, noNaN: true }),
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.integer({ min: 0, max: 2000 }), { minLength: 1, maxLength: 200 }),
        (ratePerS, burst, gaps) => {
          let t = 0;
          const limiter = new RateLimiter({ ratePerS, burst, now: () => t });
          let allowed = 0;
          for (const gap of gaps) {
            t += gap;
            if (limiter.take('k').ok) allowed++;
          }
          return allowed <= burst + (ratePerS * t) / 1000 + 1e-9;
        },
      ),
    );
  });

  it('refuses a nonsensical configuration', () => {
    assert.throws(() => new RateLimiter({ ratePerS: 0, burst: 1 }), RangeError);
    assert.throws(() => new RateLimiter({ ratePerS: 1, burst: 0 }), RangeError);
  });
});
