/** src/http/auth.ts: the caller's business from a bearer token, at once when the token is remembered. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FastifyRequest } from 'fastify';
import { JwtAuth } from '../../src/auth/jwt.js';
import { isRecgateError } from '../../src/errors.js';
import { authenticate, authenticateDownload } from '../../src/http/auth.js';
import type { AppDeps } from '../../src/http/deps.js';
import type { CallSid } from '../../src/sid.js';

const SECRET = 'z'.repeat(40);
const CALL = `CA${'0'.repeat(32)}` as CallSid;

function setup(limit?: (businessId: string) => { ok: true } | { ok: false; retryAfterS: number }) {
  const jwt = new JwtAuth(SECRET);
  const deps = {
    jwt,
    apiLimiter: limit === undefined ? undefined : { take: limit },
  } as unknown as AppDeps;
  const request = (authorization: string) =>
    ({ headers: { authorization }, query: {} }) as unknown as FastifyRequest;
  return { jwt, deps, request };
}

const isCode = (code: string) => (err: unknown) => {
  assert.ok(isRecgateError(err), String(err));
  assert.equal(err.code, code);
  return true;
};

describe('authenticate', () => {
  it('answers a remembered token at once, a new one through a promise, with the same principal', async () => {
    const { jwt, deps, request } = setup();
    const token = await jwt.sign('acme', 60);
    const first = authenticate(deps, request(`Bearer ${token}`));
    assert.ok(first instanceof Promise, 'a token never verified is checked asynchronously');
    assert.deepEqual(await first, { businessId: 'acme' });
    const again = authenticateDownload(deps, request(`Bearer ${token}`), CALL);
    assert.ok(!(again instanceof Promise), 'remembered: no promise');
    assert.deepEqual(again, { businessId: 'acme' });
  });

  it('refuses the same way on either path: a bad header at once, a forged token through the promise', async () => {
    const { deps, request } = setup();
    assert.throws(() => authenticate(deps, request('Basic abc')), isCode('RECGATE_UNAUTHENTICATED'));
    const forged = await new JwtAuth('q'.repeat(40)).sign('acme', 60);
    await assert.rejects(
      Promise.resolve().then(() => authenticate(deps, request(`Bearer ${forged}`))),
      isCode('RECGATE_UNAUTHENTICATED'),
    );
  });

  it('spends the business rate limit on the remembered path too', async () => {
    let left = 1;
    const { jwt, deps, request } = setup(() => (left-- > 0 ? { ok: true } : { ok: false, retryAfterS: 7 }));
    const token = await jwt.sign('acme', 60);
    assert.deepEqual(await authenticate(deps, request(`Bearer ${token}`)), { businessId: 'acme' });
    assert.throws(
      () => authenticate(deps, request(`Bearer ${token}`)),
      (err: unknown) => isCode('RECGATE_RATE_LIMITED')(err) && err instanceof Error,
    );
  });
});
