import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SignJWT, UnsecuredJWT } from 'jose';
import { CLOCK_SKEW_S, JwtAuth, parseTtl } from '../../src/auth/jwt.js';
import { isRecgateError } from '../../src/errors.js';

const SECRET = 'x'.repeat(40);
const key = new TextEncoder().encode(SECRET);
const now = () => Math.floor(Date.now() / 1000);

async function rejects401(p: Promise<unknown>, message?: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isRecgateError(err));
    assert.equal(err.code, 'RECGATE_UNAUTHENTICATED');
    assert.equal(err.statusCode, 401);
    if (message) assert.match(err.message, message);
    return true;
  });
}

function b64(o: unknown) {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

describe('JwtAuth', () => {
  const auth = new JwtAuth(SECRET);

  it('round-trips a signed token', async () => {
    const token = await auth.sign('acme', 60);
    assert.deepEqual(await auth.verify(token), { businessId: 'acme' });
  });

  it('rejects a short secret at construction, naming the option', () => {
    assert.throws(() => new JwtAuth('short'), /options\.jwtSecret/);
  });

  it('rejects alg none', async () => {
    const token = new UnsecuredJWT({ business_id: 'acme' }).setExpirationTime(now() + 60).encode();
    await rejects401(auth.verify(token));
  });

  it('rejects a hand-made alg none token with an empty signature', async () => {
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ business_id: 'acme', exp: now() + 60 })}.`;
    await rejects401(auth.verify(token));
  });

  it('rejects HS512 and other algorithms even with the right secret', async () => {
    const token = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS512' })
      .setExpirationTime(now() + 60)
      .sign(key);
    await rejects401(auth.verify(token));
  });

  it('rejects a token signed with another secret', async () => {
    const other = await new JwtAuth('y'.repeat(40)).sign('acme', 60);
    await rejects401(auth.verify(other));
  });

  it('rejects an expired token beyond the skew, accepts one within it', async () => {
    const expired = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now() - CLOCK_SKEW_S - 5)
      .sign(key);
    await rejects401(auth.verify(expired), /expired/);
    const withinSkew = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now() - 5)
      .sign(key);
    assert.deepEqual(await auth.verify(withinSkew), { businessId: 'acme' });
  });

  it('requires exp', async () => {
    const token = await new SignJWT({ business_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).sign(key);
    await rejects401(auth.verify(token));
  });

  it('requires a well-formed business_id claim', async () => {
    for (const business_id of [undefined, '', 42, '../etc', 'a'.repeat(200), ['acme']]) {
      const token = await new SignJWT({ business_id } as Record<string, unknown>)
        .setProtectedHeader({ alg: 'HS256' })
        .setExpirationTime(now() + 60)
        .sign(key);
      await rejects401(auth.verify(token));
    }
  });

  it('rejects a tampered payload', async () => {
    const token = await auth.sign('acme', 60);
    const [h, , s] = token.split('.');
    await rejects401(auth.verify(`${h}.${b64({ business_id: 'globex', exp: now() + 60 })}.${s}`));
  });

  it('rejects a signature respelled in its padding bits (same bytes, other last character)', async () => {
    const token = await auth.sign('acme', 60);
    const last = token.at(-1)!;
    // The last of 43 characters carries 4 signature bits and 2 padding bits: 3 other spellings decode alike.
    const base = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const group = Math.floor(base.indexOf(last) / 4) * 4;
    for (const c of base.slice(group, group + 4)) {
      if (c !== last) await rejects401(new JwtAuth(SECRET).verify(`${token.slice(0, -1)}${c}`));
    }
  });

  it('rejects garbage without throwing anything but 401', async () => {
    for (const junk of ['', 'a', 'a.b.c', '....', '\u0000', 'é.é.é']) await rejects401(auth.verify(junk));
  });
});

describe('parseTtl', () => {
  it('parses units', () => {
    assert.equal(parseTtl('3600'), 3600);
    assert.equal(parseTtl('30s'), 30);
    assert.equal(parseTtl('15m'), 900);
    assert.equal(parseTtl('1h'), 3600);
    assert.equal(parseTtl('7d'), 604800);
  });
  it('rejects nonsense', () => {
    for (const bad of ['', 'h', '1y', '-1h', '0', '1.5h', '999d']) assert.throws(() => parseTtl(bad), /ttl/);
  });
});

describe('JwtAuth verification cache', () => {
  it('still rejects a remembered token once it expires', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const auth = new JwtAuth(SECRET);
    const token = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(Math.floor(Date.now() / 1000) + 60)
      .sign(key);
    assert.deepEqual(await auth.verify(token), { businessId: 'acme' });
    t.mock.timers.tick(50_000);
    assert.deepEqual(await auth.verify(token), { businessId: 'acme' }, 'still valid, from the cache');
    t.mock.timers.tick(60_000 + CLOCK_SKEW_S * 1000);
    await rejects401(auth.verify(token));
  });

  it('never remembers a rejected token', async () => {
    const auth = new JwtAuth(SECRET);
    const forged = await new JwtAuth('y'.repeat(40)).sign('acme', 60);
    await rejects401(auth.verify(forged));
    await rejects401(auth.verify(forged));
    assert.equal(auth.remembered(forged), undefined);
  });

  it('answers a remembered token at once, and only until it expires', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const auth = new JwtAuth(SECRET);
    const token = await auth.sign('acme', 60);
    assert.equal(auth.remembered(token), undefined, 'never verified: not known');
    assert.deepEqual(await auth.verify(token), { businessId: 'acme' });
    assert.deepEqual(auth.remembered(token), { businessId: 'acme' });
    t.mock.timers.tick(60_000 + CLOCK_SKEW_S * 1000);
    assert.equal(auth.remembered(token), undefined, 'expired: not known, and forgotten');
    await rejects401(auth.verify(token));
  });
});
