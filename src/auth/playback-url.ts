/**
 * Playback URLs: `<audio src>` cannot send an Authorization header, so a short-lived URL carries its own
 * signature, an HMAC-SHA256 bound to the business, the call, the expiry and the variant (`channels`,
 * `format`; see `recordings/variant.ts`), checked in constant time. The canonical variant adds nothing to
 * what is signed, so URLs issued before variants existed still verify, and no variant can be added to them.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createError } from '../errors.js';
import { parseVariant, type Variant, variantSuffix } from '../recordings/variant.js';
import type { CallSid } from '../sid.js';
import { isBusinessId, type Principal } from './jwt.js';

export interface SignedParams {
  /** Business the URL was issued to. */
  bid: string;
  /** Expiry, Unix seconds. */
  exp: string;
  /** base64url HMAC. */
  sig: string;
}

export class PlaybackSigner {
  readonly #key: Buffer;

  constructor(secret: string) {
    // A key of its own, derived from the JWT secret, so a playback signature can never pass as a JWT's.
    this.#key = createHmac('sha256', secret).update('recgate playback-url v1').digest();
  }

  #mac(businessId: string, callSid: string, exp: number, variant: Variant | undefined): Buffer {
    const suffix = variantSuffix(variant);
    return createHmac('sha256', this.#key)
      .update(`${businessId}\n${callSid}\n${exp}${suffix === '' ? '' : `\n${suffix}`}`)
      .digest();
  }

  /**
   * Query parameters that authorize GET/HEAD of one call's download, of `variant` only (the URL must also
   * carry the variant's own `channels` / `format` parameters), until `expiresAt`.
   */
  sign(businessId: string, callSid: CallSid, expiresAt: Date, variant?: Variant): SignedParams {
    const exp = Math.floor(expiresAt.getTime() / 1000);
    return {
      bid: businessId,
      exp: String(exp),
      sig: this.#mac(businessId, callSid, exp, variant).toString('base64url'),
    };
  }

  /**
   * Checks the parameters for this call and the variant they ask for (`channels`, `format`); throws
   * RECGATE_UNAUTHENTICATED when missing, expired or forged (a variant other than the signed one included).
   */
  verify(
    callSid: CallSid,
    params: Partial<Record<keyof SignedParams | 'channels' | 'format', unknown>>,
    now = Date.now(),
  ): Principal {
    const { bid, exp, sig } = params;
    const variant = parseVariant(params);
    if (typeof bid !== 'string' || typeof exp !== 'string' || typeof sig !== 'string' || !isBusinessId(bid)) {
      throw createError('RECGATE_UNAUTHENTICATED');
    }
    // One spelling each: `0123` or a signature whose padding bits differ would otherwise verify like the
    // URL that was issued, so a changed URL would still play.
    if (!/^(?:0|[1-9]\d{0,11})$/.test(exp) || !/^[A-Za-z0-9_-]{43}$/.test(sig))
      throw createError('RECGATE_UNAUTHENTICATED');
    const expected = this.#mac(bid, callSid, Number(exp), variant);
    const given = Buffer.from(sig, 'base64url');
    if (
      given.toString('base64url') !== sig ||
      given.length !== expected.length ||
      !timingSafeEqual(given, expected)
    ) {
      throw createError('RECGATE_UNAUTHENTICATED', { message: 'The playback URL signature is invalid' });
    }
    if (Number(exp) * 1000 <= now) {
      throw createError('RECGATE_UNAUTHENTICATED', { message: 'The playback URL has expired' });
    }
    return { businessId: bid };
  }
}
