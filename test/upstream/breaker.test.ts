/** The upstream circuit breaker on a hand-driven clock. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import { UpstreamBreaker } from '../../src/upstream/breaker.js';

test('a 429 opens it for the Retry-After; Retry-After in the error is the seconds left, rounded up', () => {
  let now = 1_000_000;
  const changes: Array<[boolean, number]> = [];
  const breaker = new UpstreamBreaker({ now: () => now, onChange: (open, ms) => changes.push([open, ms]) });
  breaker.check();
  breaker.trip(2500);
  assert.equal(breaker.remainingMs(), 2500);
  assert.throws(
    () => breaker.check(),
    (err: unknown) =>
      isRecgateError(err) &&
      err.code === 'RECGATE_UPSTREAM_THROTTLED' &&
      err.statusCode === 503 &&
      err.headers['retry-after'] === '3',
  );
  now += 2000;
  assert.equal(breaker.error().headers['retry-after'], '1');
  // A shorter window never shortens it; a longer one extends it without a second "open".
  breaker.trip(100);
  assert.equal(breaker.remainingMs(), 500);
  breaker.trip(4000);
  assert.equal(breaker.remainingMs(), 4000);
  now += 4000;
  assert.equal(breaker.remainingMs(), 0);
  breaker.check();
  assert.deepEqual(changes, [[true, 2500]]);
});

test('without a usable Retry-After it opens for the default; a Retry-After of 0 does not open it', () => {
  let now = 0;
  const breaker = new UpstreamBreaker({ now: () => now, defaultMs: 7000 });
  breaker.trip(0);
  assert.equal(breaker.remainingMs(), 0);
  breaker.trip(null);
  assert.equal(breaker.remainingMs(), 7000);
  now = 7000;
  assert.equal(breaker.remainingMs(), 0);
  assert.throws(() => new UpstreamBreaker({ defaultMs: -1 }), /defaultMs/);
});

test('reports the close once the window has passed', async () => {
  const changes: boolean[] = [];
  const breaker = new UpstreamBreaker({ onChange: (open) => changes.push(open) });
  breaker.trip(30);
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.deepEqual(changes, [true, false]);
});
