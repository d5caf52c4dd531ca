/**
 * The gate before a download (src/recordings/admission/gate.ts): it reads the breaker of the account the
 * recording is read from, and a refusal by that breaker spends neither a rate-limit token nor a queue place.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import { RateLimiter } from '../../src/limits/rate-limiter.js';
import type { Admission } from '../../src/recordings/admission/admission.js';
import { UpstreamGate } from '../../src/recordings/admission/gate.js';
import { UpstreamBreaker } from '../../src/upstream/breaker.js';

const OWN = `AC${'1'.repeat(32)}`;
const SUB = `AC${'2'.repeat(32)}`;

/** An admission that counts its permits and always grants one. */
function countingAdmission(): Admission & { acquired: string[] } {
  const acquired: string[] = [];
  return {
    acquired,
    acquire: async (businessId) => {
      acquired.push(businessId);
      return { release() {} };
    },
    stats: () => ({ active: 0, queued: 0 }),
    close: async () => {},
  };
}

it('refuses a download from an account whose breaker is open, before its rate limit and the queue; other accounts go on', async () => {
  let now = 0;
  const main = new UpstreamBreaker({ now: () => now });
  const own = new UpstreamBreaker({ now: () => now });
  const asked: Array<string | undefined> = [];
  const admission = countingAdmission();
  const refusals: string[] = [];
  const gate = new UpstreamGate({
    admission,
    breaker: async (account) => {
      asked.push(account);
      return account === OWN ? own : main;
    },
    // One token per business, never refilled within the test.
    coldLimiter: new RateLimiter({ ratePerS: 0.001, burst: 1, now: () => now }),
    onRefused: (reason) => refusals.push(reason),
  });
  const signal = new AbortController().signal;
  own.trip(30_000);

  await assert.rejects(
    gate.enter({ businessId: 'own-biz', account: OWN, fresh: true }, signal),
    (err: unknown) =>
      isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_THROTTLED' && err.headers['retry-after'] === '30',
  );
  assert.deepEqual(refusals, ['throttled']);
  assert.deepEqual(admission.acquired, [], 'no queue place taken');
  // Businesses on the main account and on a subaccount (the main breaker) are not refused.
  (await gate.enter({ businessId: 'main-biz', account: undefined, fresh: true }, signal)).release();
  (await gate.enter({ businessId: 'sub-biz', account: SUB, fresh: true }, signal)).release();
  assert.deepEqual(asked, [OWN, undefined, SUB]);
  // Once the window is over, the refused business still has its one token: the refusal spent none.
  now += 30_000;
  (await gate.enter({ businessId: 'own-biz', account: OWN, fresh: true }, signal)).release();
  await assert.rejects(
    gate.enter({ businessId: 'own-biz', account: OWN, fresh: true }, signal),
    (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_RATE_LIMITED',
  );
  assert.deepEqual(admission.acquired, ['main-biz', 'sub-biz', 'own-biz']);
  assert.deepEqual(refusals, ['throttled', 'rate_limited']);
});

it('reads one breaker for every account when given one, and none when the lookup finds none', async () => {
  const breaker = new UpstreamBreaker();
  breaker.trip(5000);
  const signal = new AbortController().signal;
  const one = new UpstreamGate({ breaker });
  for (const account of [undefined, OWN]) {
    await assert.rejects(
      one.enter({ businessId: 'b', account, fresh: false }, signal),
      (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_THROTTLED',
    );
  }
  const none = new UpstreamGate({ breaker: () => undefined });
  (await none.enter({ businessId: 'b', account: OWN, fresh: false }, signal)).release();
});

it('fails the download with what the breaker lookup threw (a store read that failed)', async () => {
  const gate = new UpstreamGate({
    breaker: async () => {
      throw new Error('database down');
    },
  });
  await assert.rejects(
    gate.enter({ businessId: 'b', account: OWN, fresh: true }, new AbortController().signal),
    /database down/,
  );
});
