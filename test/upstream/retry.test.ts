/** The retry policy's pure parts: `Retry-After` and the backoff before each retry. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backoffDelay, parseRetryAfter } from '../../src/upstream/retry.js';

describe('parseRetryAfter', () => {
  test('reads delay-seconds and HTTP-dates', () => {
    const now = Date.parse('2024-01-02T10:00:00Z');
    assert.equal(parseRetryAfter('3', now), 3000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Tue, 02 Jan 2024 10:00:05 GMT', now), 5000);
    assert.equal(parseRetryAfter('Tue, 02 Jan 2024 09:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), null);
    assert.equal(parseRetryAfter(null, now), null);
  });
});

describe('backoffDelay', () => {
  const policy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 350, maxTotalMs: 10_000 };

  test('draws from 0 to an exponential bound (full jitter), capped by maxDelayMs', () => {
    assert.deepEqual(
      [1, 2, 3].map((attempt) => backoffDelay(policy, attempt, null, 0, () => 0.999_999)),
      [100, 200, 350],
    );
    assert.equal(
      backoffDelay(policy, 3, null, 0, () => 0),
      0,
    );
  });

  test('takes Retry-After instead, in full; one longer than maxDelayMs or the budget ends the retries', () => {
    assert.equal(
      backoffDelay(policy, 1, 300, 0, () => 0),
      300,
    );
    assert.equal(
      backoffDelay(policy, 1, 60_000, 0, () => 0),
      undefined,
    );
    assert.equal(
      backoffDelay(policy, 1, 300, 9_800, () => 0),
      undefined,
    );
  });

  test('shortens a backoff to what is left of maxTotalMs', () => {
    assert.equal(
      backoffDelay(policy, 3, null, 9_900, () => 1),
      100,
    );
  });

  test('gives up after maxAttempts attempts or once maxTotalMs is spent', () => {
    assert.equal(backoffDelay(policy, 4, null, 0), undefined);
    assert.equal(backoffDelay(policy, 1, null, 10_000), undefined);
  });
});
