import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { isBusinessId, type Principal } from '../auth/jwt.js';
import { createError } from '../errors.js';
import type { CallSid } from '../sid.js';
import type { AppDeps } from './deps.js';

function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ ]+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(header);
  if (!m) throw createError('RECGATE_UNAUTHENTICATED', { message: 'Authorization must be "Bearer <JWT>"' });
  return m[1];
}

/**
 * Takes one request from the business's API budget, or throws RECGATE_RATE_LIMITED with the seconds until
 * it has one again. Runs only once a credential is verified, so failed or forged credentials never spend
 * a business's budget.
 */
function admit(deps: AppDeps, principal: Principal): Principal {
  const verdict = deps.apiLimiter?.take(principal.businessId);
  if (verdict === undefined || verdict.ok) return principal;
  throw createError('RECGATE_RATE_LIMITED', { headers: { 'retry-after': String(verdict.retryAfterS) } });
}

/**
 * The business an embedding app's own authentication names (see {@link AppDeps.authenticate}). `null` or
 * `undefined` is RECGATE_UNAUTHENTICATED; anything but a business id is the host app's bug, a 500 whose
 * cause only the log sees.
 */
async function fromHook(
  hook: NonNullable<AppDeps['authenticate']>,
  request: FastifyRequest,
): Promise<Principal> {
  const businessId = await hook(request);
  if (businessId === null || businessId === undefined) throw createError('RECGATE_UNAUTHENTICATED');
  if (!isBusinessId(businessId)) {
    throw createError('RECGATE_INTERNAL', {
      cause: new TypeError(
        'authenticate must resolve to a business id (^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$) or null',
      ),
    });
  }
  return { businessId };
}

/**
 * The caller's business, within its API rate limit: from the embedding app's `authenticate` hook when it
 * gives one, else from a bearer JWT. A token verified before is answered at once, without a promise (the
 * warm path); the rest as a promise. Either way a refusal is a RecgateError, thrown or rejected: callers
 * `await` it.
 */
export function authenticate(deps: AppDeps, request: FastifyRequest): Principal | Promise<Principal> {
  if (deps.authenticate !== undefined) {
    return fromHook(deps.authenticate, request).then((principal) => admit(deps, principal));
  }
  const token = bearer(request);
  if (!token) throw createError('RECGATE_UNAUTHENTICATED');
  const known = deps.jwt.remembered(token);
  if (known !== undefined) return admit(deps, known);
  return deps.jwt.verify(token).then((principal) => admit(deps, principal));
}

/**
 * A bearer JWT (or the embedding app's hook), or, for this call's download only, a signed playback URL's
 * own parameters; within the business's API rate limit either way. With a hook, a signed URL is checked
 * first: the hook's credential (a session cookie, say) may well ride along on an `<audio>` request too.
 * Answers like {@link authenticate}: at once for a remembered token, else a promise.
 */
export function authenticateDownload(
  deps: AppDeps,
  request: FastifyRequest,
  callSid: CallSid,
): Principal | Promise<Principal> {
  const query = request.query as Record<string, unknown>;
  if (deps.authenticate !== undefined) {
    if (query.sig !== undefined) return signedUrl(deps, callSid, query);
    return authenticate(deps, request);
  }
  if (request.headers.authorization !== undefined) return authenticate(deps, request);
  if (query.sig !== undefined) return signedUrl(deps, callSid, query);
  throw createError('RECGATE_UNAUTHENTICATED');
}

async function signedUrl(
  deps: AppDeps,
  callSid: CallSid,
  query: Record<string, unknown>,
): Promise<Principal> {
  return admit(deps, await deps.signer.verify(callSid, query));
}

/** Constant-time check of the admin token; the admin API is absent (404) when no token is configured. */
export function requireAdmin(deps: AppDeps, request: FastifyRequest): void {
  const configured = deps.config.adminToken;
  if (!configured) throw createError('RECGATE_ADMIN_DISABLED');
  requireToken(request, configured);
}

/** `Authorization: Bearer <configured>`, compared in constant time; RECGATE_UNAUTHENTICATED otherwise. */
export function requireToken(request: FastifyRequest, configured: string): void {
  const token = bearer(request);
  const a = createHash('sha256')
    .update(token ?? '')
    .digest();
  const b = createHash('sha256').update(configured).digest();
  if (!token || !timingSafeEqual(a, b)) throw createError('RECGATE_UNAUTHENTICATED');
}
