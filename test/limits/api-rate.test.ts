/**
 * The per-business API rate limit (issue 11, item 3): keyed by the business once its credential is
 * verified, answered with 429 RECGATE_RATE_LIMITED and a Retry-After that holds, never applied to health
 * and metrics, never spent by failed credentials; and its defaults leave a busy `<audio>` player alone.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { ConfigSchema } from '../../src/config/config.js';
import { RateLimiter } from '../../src/limits/rate-limiter.js';
import { apiLimits } from '../../src/server.js';
import type { CallSid } from '../../src/sid.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

/** A JWT signed with the gateway's own secret, with the claims given (an expired one, say). */
function hs256(claims: Record<string, unknown>): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', JWT_SECRET).update(body).digest('base64url')}`;
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

describe('per-business API rate limit', () => {
  let stack: Stack;
  /** One request every 10 s: nothing refills while a test runs. */
  let slow: Stack;
  let acme: string;
  let globex: string;

  before(async () => {
    // 2 requests per second, 5 at once.
    stack = await startStack({ config: { apiRatePerS: 2, apiBurst: 5 } });
    slow = await startStack({ config: { apiRatePerS: 0.1, apiBurst: 5 } });
    acme = await stack.token('acme');
    globex = await stack.token('globex');
  });
  after(async () => {
    await stack?.close();
    await slow?.close();
  });

  it('answers 429 RECGATE_RATE_LIMITED with a Retry-After after which the business is served again', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++)
      statuses.push((await get(`${stack.url}/api/calls`, { authorization: `Bearer ${acme}` })).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    const refused = await get(`${stack.url}/api/calls`, { authorization: `Bearer ${acme}` });
    assert.equal(refused.status, 429);
    assert.equal(JSON.parse(refused.text).error.code, 'RECGATE_RATE_LIMITED');
    // One token comes back every 500 ms: the next is at most a second away.
    assert.equal(refused.headers['retry-after'], '1');
    // Another business has its own budget.
    assert.equal((await get(`${stack.url}/api/calls`, { authorization: `Bearer ${globex}` })).status, 200);
    // Health and metrics are never limited, whoever asks.
    for (let i = 0; i < 20; i++) {
      for (const route of ['/healthz', '/readyz', '/metrics']) {
        assert.equal(
          (await get(`${stack.url}${route}`, { authorization: `Bearer ${acme}` })).status,
          200,
          route,
        );
      }
    }
    await sleep(Number(refused.headers['retry-after']) * 1000);
    assert.equal((await get(`${stack.url}/api/calls`, { authorization: `Bearer ${acme}` })).status, 200);
  });

  it('counts downloads through a playback URL against the business', async () => {
    const rec = await slow.emulator.createRecording({ bytes: 20_000 });
    await slow.register({
      businessId: 'initech',
      callSid: rec.call_sid as CallSid,
      startedAt: new Date().toISOString(),
    });
    const initech = await slow.token('initech');
    const res = await request(`${slow.url}/api/calls/${rec.call_sid}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${initech}` },
    });
    const { url } = (await res.body.json()) as { url: string };
    const statuses: Array<Awaited<ReturnType<typeof get>>> = [];
    for (let i = 0; i < 5; i++) statuses.push(await get(url, { range: `bytes=${i * 100}-${i * 100 + 99}` }));
    // The playback URL took one token, so four ranges pass and the fifth is refused, for the 10 s until
    // the next token.
    assert.deepEqual(
      statuses.map((r) => r.status),
      [206, 206, 206, 206, 429],
    );
    assert.equal(statuses[4]!.headers['retry-after'], '10');
  });

  it('spends no budget on failed or forged credentials, even ones naming the business', async () => {
    const forged = await new JwtAuth('another-secret-'.padEnd(48, 'y')).sign('umbrella', 600);
    const expired = hs256({ business_id: 'umbrella', exp: Math.floor(Date.now() / 1000) - 60 });
    for (let i = 0; i < 30; i++) {
      for (const authorization of [`Bearer ${forged}`, `Bearer ${expired}`, 'Bearer nonsense', 'Basic abc']) {
        assert.equal((await get(`${slow.url}/api/calls`, { authorization })).status, 401);
      }
    }
    const umbrella = await slow.token('umbrella');
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      statuses.push((await get(`${slow.url}/api/calls`, { authorization: `Bearer ${umbrella}` })).status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
  });
});

describe('API rate limit at its defaults', () => {
  let stack: Stack;

  before(async () => {
    // One worker's share of two: the tightest a single browser meets under --workers 2.
    stack = await startStack({ config: { workers: 2 } });
  });
  after(() => stack?.close());

  it('lets an <audio> player seek 100 times back to back, with its page around it', async () => {
    const rec = await stack.emulator.createRecording({ bytes: 200_000 });
    await stack.register({
      businessId: 'acme',
      callSid: rec.call_sid as CallSid,
      startedAt: new Date().toISOString(),
    });
    const acme = await stack.token('acme');
    const statuses = new Set<number>();
    statuses.add((await get(`${stack.url}/api/calls`, { authorization: `Bearer ${acme}` })).status);
    const res = await request(`${stack.url}/api/calls/${rec.call_sid}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${acme}` },
    });
    statuses.add(res.statusCode);
    const { url } = (await res.body.json()) as { url: string };
    for (let i = 0; i < 100; i++) {
      const start = (i * 7919) % 190_000;
      statuses.add((await get(url, { range: `bytes=${start}-` })).status);
      if (i % 10 === 0)
        statuses.add(
          (await get(`${stack.url}/api/calls/${rec.call_sid}`, { authorization: `Bearer ${acme}` })).status,
        );
    }
    assert.deepEqual([...statuses].sort(), [200, 206]);
  });
});

describe('API rate limit defaults', () => {
  const defaults = ConfigSchema.parse({ demo: true });

  it('divides the per-host rate and burst among workers, and 0 turns it off', () => {
    assert.deepEqual(apiLimits(defaults), { ratePerS: 200, burst: 1000 });
    assert.deepEqual(apiLimits({ ...defaults, workers: 2 }), { ratePerS: 100, burst: 500 });
    assert.deepEqual(apiLimits({ ...defaults, workers: 7 }), { ratePerS: 200 / 7, burst: 143 });
    assert.equal(apiLimits({ ...defaults, apiRatePerS: 0 }), undefined);
  });

  it('never refuses a busy <audio> player and its colleagues, even when all land on one of 2 workers', () => {
    // One agent scrubbing through a recording for a minute: a Range request every 50 ms (20/s, several
    // times what a browser issues while seeking), the list refreshed every 5 s, a playback URL every 10 s;
    // and nine colleagues of the same business clicking through calls at a request a second each.
    let now = 0;
    const limiter = new RateLimiter({ ...apiLimits({ ...defaults, workers: 2 })!, now: () => now });
    let refused = 0;
    const take = () => {
      if (!limiter.take('acme').ok) refused++;
    };
    for (let ms = 0; ms < 60_000; ms += 50) {
      now = ms;
      take();
      if (ms % 5000 === 0) take();
      if (ms % 10_000 === 0) take();
      if (ms % 1000 === 0) for (let c = 0; c < 9; c++) take();
    }
    assert.equal(refused, 0);
  });

  it("lets a page load its list, 50 playback URLs and a player's first ranges at once", () => {
    const limiter = new RateLimiter({ ...apiLimits({ ...defaults, workers: 2 })!, now: () => 0 });
    // All in the same instant: a burst of 100 on one worker.
    for (let i = 0; i < 100; i++) assert.ok(limiter.take('acme').ok, `request ${i}`);
  });
});
