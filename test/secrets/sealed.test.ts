import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import { parseKey, Sealer, sealedKeyId } from '../../src/secrets/sealed.js';

const KEY = Buffer.alloc(32, 1);
const OLD = Buffer.alloc(32, 2);

function unreadable(err: unknown): boolean {
  return isRecgateError(err) && err.code === 'RECGATE_CREDENTIALS_UNREADABLE';
}

/** Replaces part `index` (0-based, of the five) of a sealed value with `part`. */
function withPart(sealed: string, index: number, part: string): string {
  const parts = sealed.split('.');
  parts[index] = part;
  return parts.join('.');
}

/** Flips one bit of a base64url part. */
function flip(part: string): string {
  const bytes = Buffer.from(part, 'base64url');
  bytes[0]! ^= 1;
  return bytes.toString('base64url');
}

describe('Sealer', () => {
  it('opens what it sealed, with a fresh IV each time and no plaintext in the value', () => {
    const sealer = new Sealer({ key: KEY });
    const a = sealer.seal('{"authToken":"tok-secret"}', 'business:a');
    const b = sealer.seal('{"authToken":"tok-secret"}', 'business:a');
    assert.notEqual(a, b);
    assert.ok(!a.includes('tok-secret') && !Buffer.from(a).toString('latin1').includes('secret'));
    assert.equal(sealer.open(a, 'business:a'), '{"authToken":"tok-secret"}');
    assert.equal(sealedKeyId(a), sealer.keyId);
    assert.ok(sealer.isCurrent(a));
  });

  it('refuses a tampered IV, ciphertext or tag, and a value sealed for another context', () => {
    const sealer = new Sealer({ key: KEY });
    const sealed = sealer.seal('secret', 'business:a');
    for (const index of [2, 3, 4]) {
      const tampered = withPart(sealed, index, flip(sealed.split('.')[index]!));
      assert.throws(() => sealer.open(tampered, 'business:a'), unreadable, `part ${index}`);
    }
    assert.throws(() => sealer.open(sealed, 'business:b'), unreadable);
    for (const bad of ['', 'secret', 'rs1.x.y.z', `${sealed}.extra`, sealed.replace(/^rs1/, 'rs2')]) {
      assert.throws(() => sealer.open(bad, 'business:a'), unreadable, bad);
    }
  });

  it('refuses a value sealed under a key it does not hold, without naming key material', () => {
    const sealed = new Sealer({ key: OLD }).seal('secret', 'ctx');
    const err = (() => {
      try {
        new Sealer({ key: KEY }).open(sealed, 'ctx');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.ok(unreadable(err));
    const text = `${(err as Error).message} ${String((err as Error).cause)}`;
    assert.ok(!text.includes(KEY.toString('hex')) && !text.includes('secret'));
  });

  it('rotates: previous keys open old values, only the current key seals', () => {
    const old = new Sealer({ key: OLD });
    const sealedOld = old.seal('secret', 'ctx');
    const rotated = new Sealer({ key: KEY, previousKeys: [OLD] });
    assert.equal(rotated.open(sealedOld, 'ctx'), 'secret');
    assert.equal(rotated.isCurrent(sealedOld), false);
    const resealed = rotated.seal(rotated.open(sealedOld, 'ctx'), 'ctx');
    assert.ok(rotated.isCurrent(resealed));
    // Once the old key is dropped the re-sealed value still opens, the old one no longer does.
    const after = new Sealer({ key: KEY });
    assert.equal(after.open(resealed, 'ctx'), 'secret');
    assert.throws(() => after.open(sealedOld, 'ctx'), unreadable);
  });

  it('reads keys from the environment as hex or base64, and names the bad variable', () => {
    const hex = randomBytes(32);
    assert.equal(Sealer.fromEnv({}), undefined);
    const fromHex = Sealer.fromEnv({ RECGATE_CREDENTIALS_KEY: hex.toString('hex') })!;
    const fromB64 = Sealer.fromEnv({
      RECGATE_CREDENTIALS_KEY: hex.toString('base64'),
      RECGATE_CREDENTIALS_KEY_PREVIOUS: ` ${OLD.toString('hex')} , ${Buffer.alloc(32, 3).toString('base64url')}`,
    })!;
    assert.equal(fromHex.keyId, fromB64.keyId);
    assert.equal(fromB64.open(new Sealer({ key: OLD }).seal('x', 'c'), 'c'), 'x');
    assert.deepEqual(parseKey(hex.toString('base64url'), 'K'), hex);
    assert.throws(
      () => Sealer.fromEnv({ RECGATE_CREDENTIALS_KEY: 'too-short' }),
      /RECGATE_CREDENTIALS_KEY must be 32 bytes/,
    );
    assert.throws(
      () => Sealer.fromEnv({ RECGATE_CREDENTIALS_KEY: Buffer.alloc(31).toString('base64') }),
      /RECGATE_CREDENTIALS_KEY must be 32 bytes/,
    );
    assert.throws(
      () =>
        Sealer.fromEnv({
          RECGATE_CREDENTIALS_KEY: hex.toString('hex'),
          RECGATE_CREDENTIALS_KEY_PREVIOUS: 'nope',
        }),
      /RECGATE_CREDENTIALS_KEY_PREVIOUS\[0\]/,
    );
    assert.throws(
      () => Sealer.fromEnv({ RECGATE_CREDENTIALS_KEY_PREVIOUS: hex.toString('hex') }),
      /RECGATE_CREDENTIALS_KEY is not/,
    );
    assert.throws(() => new Sealer({ key: Buffer.alloc(16) }), /options\.key must be a Buffer of 32 bytes/);
  });
});
