/**
 * fast-check properties over the credentials a client can forge: bearer JWTs, playback URLs and SIDs
 * (issue 11, item 4). Each property runs with a fixed seed, so a failure reproduces exactly.
 *
 * - JWT: any change to any character of a valid token fails; every `alg` but HS256 fails, whatever the
 *   signature; expired and not-yet-valid tokens fail; nothing thrown is ever anything but a RecgateError
 *   RECGATE_UNAUTHENTICATED.
 * - Playback URL: any change to `bid`, `exp` or `sig`, an expired URL, and the URL of one call replayed
 *   for another all fail with RECGATE_UNAUTHENTICATED.
 * - SIDs: exactly the canonical `CA`/`RE` + 32 lower-case hex strings pass; near misses fail with a 400.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { CLOCK_SKEW_S, JwtAuth } from '../../src/auth/jwt.js';
import { PlaybackSigner } from '../../src/auth/playback-url.js';
import { isRecgateError } from '../../src/errors.js';
import { type CallSid, isCallSid, isRecordingSid, parseCallSid, parseRecordingSid } from '../../src/sid.js';

const SEED = 1101;
const SECRET = 'property-secret-'.padEnd(48, 'p');
const key = new TextEncoder().encode(SECRET);
const now = () => Math.floor(Date.now() / 1000);
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

const hexDigit = fc.constantFrom(...'0123456789abcdef');
const hex32 = fc.string({ unit: hexDigit, minLength: 32, maxLength: 32 });
const callSid = hex32.map((h) => `CA${h}` as CallSid);
const businessId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}$/);

function unauthenticated(err: unknown): true {
  assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
  assert.equal(err.code, 'RECGATE_UNAUTHENTICATED');
  return true;
}

/**
 * A position in a string of `length` characters, often one of the last three: the last base64url character
 * of a segment carries padding bits, where a lenient decoder lets a changed character decode to the same bytes.
 */
const position = (length: number) =>
  fc.oneof(fc.nat({ max: length - 1 }), fc.integer({ min: Math.max(0, length - 3), max: length - 1 }));

/** Replaces the character at `at` (modulo the length) by another one from `alphabet`. */
function mutate(text: string, at: number, pick: number, alphabet: string): string {
  const i = at % text.length;
  const choices = alphabet.replace(text[i]!, '');
  return text.slice(0, i) + choices[pick % choices.length] + text.slice(i + 1);
}

const b64json = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** A token with this header, signed (when the algorithm is an HMAC) with the gateway's own secret. */
function handMade(header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[String(header.alg).toUpperCase()];
  const signature =
    hash === undefined ? 'c2lnbmF0dXJl' : createHmac(hash, key).update(input).digest('base64url');
  return `${input}.${signature}`;
}

describe('JWT properties', () => {
  const auth = new JwtAuth(SECRET);

  it('any one-character change to a valid token is refused', async () => {
    const token = await auth.sign('acme', 600);
    await fc.assert(
      fc.asyncProperty(position(token.length), fc.nat(), async (at, pick) => {
        const tampered = mutate(token, at, pick, `${B64URL}.`);
        await assert.rejects(new JwtAuth(SECRET).verify(tampered), unauthenticated);
      }),
      { seed: SEED, numRuns: 600 },
    );
  });

  it('every algorithm but HS256 is refused, even signed with the right secret', async () => {
    const alg = fc.constantFrom(
      'none',
      'None',
      'NONE',
      'hs256',
      'HS384',
      'HS512',
      'RS256',
      'ES256',
      'PS256',
      'EdDSA',
      '',
    );
    await fc.assert(
      fc.asyncProperty(alg, businessId, fc.boolean(), async (a, bid, emptySignature) => {
        let token = handMade({ alg: a, typ: 'JWT' }, { business_id: bid, exp: now() + 600 });
        if (emptySignature) token = `${token.slice(0, token.lastIndexOf('.'))}.`;
        await assert.rejects(auth.verify(token), unauthenticated);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('tokens expired or not yet valid beyond the clock skew are refused', async () => {
    const offset = fc.integer({ min: CLOCK_SKEW_S + 2, max: 10 * 365 * 86400 });
    await fc.assert(
      fc.asyncProperty(offset, fc.boolean(), businessId, async (by, expired, bid) => {
        const claims = expired
          ? { business_id: bid, exp: now() - by }
          : { business_id: bid, exp: now() + by + 600, nbf: now() + by };
        const token = handMade({ alg: 'HS256', typ: 'JWT' }, claims);
        await assert.rejects(auth.verify(token), unauthenticated);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('a valid token for any well-formed business verifies to that business', async () => {
    await fc.assert(
      fc.asyncProperty(businessId, async (bid) => {
        const token = await new SignJWT({ business_id: bid })
          .setProtectedHeader({ alg: 'HS256' })
          .setExpirationTime(now() + 600)
          .sign(key);
        assert.deepEqual(await auth.verify(token), { businessId: bid });
      }),
      { seed: SEED, numRuns: 100 },
    );
  });

  it('whatever never verifies throws only RECGATE_UNAUTHENTICATED', async () => {
    const segment = fc.oneof(
      fc.string({ unit: fc.constantFrom(...B64URL), maxLength: 60 }),
      fc.json().map((j) => Buffer.from(j).toString('base64url')),
      fc.anything().map((v) => b64json({ alg: 'HS256', business_id: v, exp: v })),
      fc.string({ maxLength: 40 }),
    );
    const junk = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.tuple(segment, segment, segment).map((parts) => parts.join('.')),
      fc.array(segment, { maxLength: 6 }).map((parts) => parts.join('.')),
    );
    await fc.assert(
      fc.asyncProperty(junk, async (token) => {
        await assert.rejects(auth.verify(token), unauthenticated);
      }),
      { seed: SEED, numRuns: 1500 },
    );
  });
});

describe('playback URL properties', () => {
  const signer = new PlaybackSigner(SECRET);
  const future = () => new Date(Date.now() + 600_000);

  it('a change to any character of bid, exp or sig is refused', () => {
    fc.assert(
      fc.property(
        businessId,
        callSid,
        fc.constantFrom('bid', 'exp', 'sig'),
        fc.oneof(fc.nat({ max: 2 }), fc.nat()),
        fc.nat(),
        (bid, call, field, fromEnd, pick) => {
          const params = signer.sign(bid, call, future());
          const alphabet = field === 'exp' ? '0123456789' : field === 'sig' ? B64URL : `${B64URL}.:`;
          const value = params[field];
          const at = value.length - 1 - (fromEnd % value.length);
          const tampered = { ...params, [field]: mutate(value, at, pick, alphabet) };
          assert.throws(() => signer.verify(call, tampered), unauthenticated);
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
  });

  it('an expiry written another way (leading zeros, sign, spaces) is refused', () => {
    fc.assert(
      fc.property(callSid, fc.constantFrom('0', '00', '+', ' ', '\t'), (call, prefix) => {
        const params = signer.sign('acme', call, future());
        assert.throws(() => signer.verify(call, { ...params, exp: prefix + params.exp }), unauthenticated);
      }),
      { seed: SEED, numRuns: 50 },
    );
  });

  it('an expired URL is refused, however little past its expiry', () => {
    fc.assert(
      fc.property(callSid, fc.integer({ min: 0, max: 10 * 365 * 86400 * 1000 }), (call, late) => {
        const expiresAt = future();
        const params = signer.sign('acme', call, expiresAt);
        const exp = Number(params.exp) * 1000;
        assert.throws(() => signer.verify(call, params, exp + late), unauthenticated);
        assert.deepEqual(signer.verify(call, params, exp - 1), { businessId: 'acme' });
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('a URL replayed for another call is refused', () => {
    fc.assert(
      fc.property(businessId, callSid, callSid, (bid, call, other) => {
        fc.pre(call !== other);
        const params = signer.sign(bid, call, future());
        assert.throws(() => signer.verify(other, params), unauthenticated);
      }),
      { seed: SEED, numRuns: 1000 },
    );
  });

  it('anything else never passes and throws only RECGATE_UNAUTHENTICATED', () => {
    const value = fc.oneof(fc.string({ maxLength: 60 }), fc.anything());
    fc.assert(
      fc.property(callSid, value, value, value, (call, bid, exp, sig) => {
        assert.throws(() => signer.verify(call, { bid, exp, sig }), unauthenticated);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});

describe('SID properties', () => {
  it('canonical call and recording SIDs pass, each as its own kind only', () => {
    fc.assert(
      fc.property(hex32, (h) => {
        assert.equal(parseCallSid(`CA${h}`), `CA${h}`);
        assert.equal(parseRecordingSid(`RE${h}`), `RE${h}`);
        assert.equal(isCallSid(`RE${h}`), false);
        assert.equal(isRecordingSid(`CA${h}`), false);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('near misses (one character changed, added or removed, case, encodings, look-alikes) fail with 400', () => {
    const hostile = fc.constantFrom(
      'A',
      'F',
      'g',
      '/',
      '%2F',
      '%00',
      '\u0000',
      '\n',
      ' ',
      '.',
      '\u0430', // Cyrillic a
      '\uff41', // fullwidth a
      '\u0660', // Arabic-Indic zero
      '\u200b',
    );
    const nearMiss = fc
      .oneof(
        fc
          .tuple(hex32, fc.nat(33), hostile)
          .map(([h, at, c]) => `CA${h}`.slice(0, at) + c + `CA${h}`.slice(at + 1)),
        fc
          .tuple(hex32, fc.nat(34), hostile)
          .map(([h, at, c]) => `CA${h}`.slice(0, at) + c + `CA${h}`.slice(at)),
        fc.tuple(hex32, fc.nat(33)).map(([h, at]) => `CA${h}`.slice(0, at) + `CA${h}`.slice(at + 1)),
        hex32.map((h) => `ca${h}`),
        hex32.filter((h) => /[a-f]/.test(h)).map((h) => `CA${h.toUpperCase()}`),
        hex32.map((h) => encodeURIComponent(`CA${h}/`)),
        fc.string({ maxLength: 80 }),
      )
      .filter((s) => !/^CA[0-9a-f]{32}$/.test(s));
    fc.assert(
      fc.property(nearMiss, (sid) => {
        assert.equal(isCallSid(sid), false, JSON.stringify(sid));
        assert.throws(
          () => parseCallSid(sid),
          (err: unknown) =>
            isRecgateError(err) && err.code === 'RECGATE_INVALID_CALL_SID' && err.statusCode === 400,
        );
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });

  it('non-strings never pass', () => {
    fc.assert(
      fc.property(
        fc.anything().filter((v) => typeof v !== 'string'),
        (v) => !isCallSid(v) && !isRecordingSid(v),
      ),
      { seed: SEED, numRuns: 500 },
    );
  });
});
