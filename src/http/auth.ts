import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Principal } from '../auth/jwt.js';
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

/** The caller's business, from a bearer JWT. */
export async function authenticate(deps: AppDeps, request: FastifyRequest): Promise<Principal> {
  const token = bearer(request);
  if (!token) throw createError('RECGATE_UNAUTHENTICATED');
  return deps.jwt.verify(token);
}

/** A bearer JWT, or, for this call's download only, a signed playback URL's own parameters. */
export async function authenticateDownload(
  deps: AppDeps,
  request: FastifyRequest,
  callSid: CallSid,
): Promise<Principal> {
  if (request.headers.authorization !== undefined) return authenticate(deps, request);
  const query = request.query as Record<string, unknown>;
  if (query.sig !== undefined) return deps.signer.verify(callSid, query);
  throw createError('RECGATE_UNAUTHENTICATED');
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
