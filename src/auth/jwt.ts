/**
 * Bearer tokens: HS256 JWTs whose `business_id` claim names the tenant. The algorithm is pinned (no
 * `alg: none`, no RS/HS confusion), `exp` is required and checked with a small clock skew.
 */
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { createError } from '../errors.js';

/** Seconds of clock skew tolerated on `exp`, `nbf` and `iat`. */
export const CLOCK_SKEW_S = 30;

const BUSINESS_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

export function isBusinessId(value: unknown): value is string {
  return typeof value === 'string' && BUSINESS_ID.test(value);
}

export interface Principal {
  businessId: string;
}

/** Verified tokens remembered, so a player's many Range requests cost one signature check, not one each. */
const VERIFIED_CACHE_SIZE = 10_000;

export class JwtAuth {
  readonly #key: Uint8Array;
  /** token → who it names and when it stops being accepted (ms); insertion order doubles as age order. */
  readonly #verified = new Map<string, { principal: Principal; acceptUntilMs: number }>();
  /** Checks in progress: a burst of requests with one new token runs one check. */
  readonly #checking = new Map<string, Promise<Principal>>();

  constructor(secret: string) {
    if (typeof secret !== 'string' || secret.length < 32) {
      throw new TypeError('options.jwtSecret must be a string of at least 32 characters');
    }
    this.#key = new TextEncoder().encode(secret);
  }

  /** Verifies a compact JWT; throws RECGATE_UNAUTHENTICATED for anything wrong with it. */
  async verify(token: string): Promise<Principal> {
    const known = this.remembered(token);
    if (known !== undefined) return known;
    let checking = this.#checking.get(token);
    if (checking === undefined) {
      checking = this.#check(token).finally(() => this.#checking.delete(token));
      this.#checking.set(token, checking);
    }
    return checking;
  }

  /**
   * Who `token` names, if it was verified before and is still accepted: answered at once, without a promise,
   * for the warm path (a player's many Range requests carry one token). `undefined` only says "not
   * remembered"; {@link verify} decides.
   */
  remembered(token: string): Principal | undefined {
    const known = this.#verified.get(token);
    if (known === undefined) return undefined;
    if (Date.now() < known.acceptUntilMs) return known.principal;
    this.#verified.delete(token);
    return undefined;
  }

  async #check(token: string): Promise<Principal> {
    try {
      if (!canonicalSignature(token)) {
        throw createError('RECGATE_UNAUTHENTICATED', { message: 'The token is invalid' });
      }
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ['HS256'],
        clockTolerance: CLOCK_SKEW_S,
        requiredClaims: ['exp'],
      });
      if (!isBusinessId(payload.business_id)) {
        throw createError('RECGATE_UNAUTHENTICATED', { message: 'The token has no valid business_id claim' });
      }
      const principal = { businessId: payload.business_id };
      this.#remember(token, principal, (payload.exp as number) * 1000 + CLOCK_SKEW_S * 1000);
      return principal;
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) {
        throw createError('RECGATE_UNAUTHENTICATED', { message: 'The token has expired', cause: err });
      }
      if (err instanceof Error && err.name === 'RecgateError') throw err;
      throw createError('RECGATE_UNAUTHENTICATED', { message: 'The token is invalid', cause: err });
    }
  }

  #remember(token: string, principal: Principal, acceptUntilMs: number): void {
    if (this.#verified.size >= VERIFIED_CACHE_SIZE) {
      const oldest = this.#verified.keys().next().value;
      if (oldest !== undefined) this.#verified.delete(oldest);
    }
    this.#verified.set(token, { principal, acceptUntilMs });
  }

  /** Signs a token for a business, valid for `ttlS` seconds. */
  async sign(businessId: string, ttlS: number): Promise<string> {
    if (!isBusinessId(businessId))
      throw new TypeError('business must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$');
    if (!Number.isInteger(ttlS) || ttlS <= 0) throw new TypeError('ttl must be a positive number of seconds');
    return new SignJWT({ business_id: businessId })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlS)
      .sign(this.#key);
  }
}

/**
 * Whether the token's last segment is canonical base64url. The last character of a 32-byte signature carries
 * two padding bits that decoders ignore, so without this check four spellings of one signature all verify:
 * a token changed in its last character would still be accepted.
 */
function canonicalSignature(token: string): boolean {
  const signature = token.slice(token.lastIndexOf('.') + 1);
  return Buffer.from(signature, 'base64url').toString('base64url') === signature;
}

/** Parses `30s`, `15m`, `1h`, `7d` or a bare number of seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) throw new TypeError(`ttl must look like 3600, 30s, 15m, 1h or 7d (got ${JSON.stringify(text)})`);
  const n = Number(m[1]);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  const ttl = n * unit;
  if (ttl <= 0 || ttl > 366 * 86400) throw new TypeError('ttl must be between 1 second and 366 days');
  return ttl;
}
