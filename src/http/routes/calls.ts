import type { FastifyInstance } from 'fastify';
import type { CallRecord } from '../../call-log/call-log.js';
import { createError } from '../../errors.js';
import type { CacheState } from '../../recordings/cache.js';
import { isCanonical, parseVariant, variantQuery } from '../../recordings/variant.js';
import { type CallSid, parseCallSid } from '../../sid.js';
import { authenticate } from '../auth.js';
import type { AppDeps } from '../deps.js';

/**
 * The public JSON shape of a call (snake_case, as the README's HTTP API documents it). `foreign` holds the calls registered to
 * another business than the caller's: a parent among them is not shown, and a recording living on one of
 * them is shown as absent, since the download answers it as missing (see src/resolution/resolver.ts).
 */
export function callJson(call: CallRecord, cache?: CacheState, foreign: ReadonlySet<CallSid> = new Set()) {
  const hidden = call.recordingOwnerCallSid !== null && foreign.has(call.recordingOwnerCallSid);
  return {
    call_sid: call.callSid,
    parent_call_sid:
      call.parentCallSid !== null && foreign.has(call.parentCallSid) ? null : call.parentCallSid,
    direction: call.direction,
    from: call.from,
    to: call.to,
    started_at: call.startedAt,
    duration_s: call.durationS,
    recording: hidden
      ? {
          state: 'absent',
          recording_sid: null,
          owner_call_sid: null,
          size: null,
          upstream_status: null,
          purged_at: null,
          cache: { state: 'absent' },
        }
      : {
          state: call.recordingState,
          recording_sid: call.recordingSid,
          owner_call_sid: call.recordingOwnerCallSid,
          size: call.recordingSize,
          upstream_status: call.recordingStatus,
          purged_at: call.purgedAt,
          ...(cache ? { cache: cacheJson(cache) } : {}),
        },
  };
}

/**
 * Which of the calls that `calls` link to (parents, and owners of recordings they play) are registered to
 * another business than `businessId`. One call-log query per page, none when nothing links elsewhere.
 */
async function foreignLinks(deps: AppDeps, businessId: string, calls: CallRecord[]): Promise<Set<CallSid>> {
  const linked = new Set<CallSid>();
  for (const call of calls) {
    if (call.parentCallSid !== null) linked.add(call.parentCallSid);
    if (call.recordingOwnerCallSid !== null && call.recordingOwnerCallSid !== call.callSid) {
      linked.add(call.recordingOwnerCallSid);
    }
  }
  const foreign = new Set<CallSid>();
  if (linked.size === 0) return foreign;
  for (const [sid, owner] of await deps.callLog.businessesOf([...linked])) {
    if (owner !== businessId) foreign.add(sid);
  }
  return foreign;
}

function cacheJson(cache: CacheState) {
  switch (cache.state) {
    case 'cached':
      return { state: 'cached', size: cache.size };
    case 'downloading':
      return { state: 'downloading', size: cache.size, received: cache.received };
    default:
      return { state: 'absent' };
  }
}

async function cacheStateOf(deps: AppDeps, call: CallRecord, foreign: Set<CallSid>): Promise<CacheState> {
  if (call.recordingState !== 'available' || !call.recordingSid || !call.recordingOwnerCallSid) {
    return { state: 'absent' };
  }
  if (foreign.has(call.recordingOwnerCallSid)) return { state: 'absent' };
  return deps.cache.state({ recordingSid: call.recordingSid, ownerCallSid: call.recordingOwnerCallSid });
}

function parseLimit(value: unknown): number {
  if (value === undefined) return 50;
  if (typeof value !== 'string' || !/^\d{1,3}$/.test(value) || Number(value) < 1 || Number(value) > 200) {
    throw createError('RECGATE_INVALID_REQUEST', { message: 'limit must be an integer from 1 to 200' });
  }
  return Number(value);
}

export function callRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.get('/api/calls', async (request) => {
    const { businessId } = await authenticate(deps, request);
    const query = request.query as Record<string, unknown>;
    const limit = parseLimit(query.limit);
    if (query.cursor !== undefined && (typeof query.cursor !== 'string' || query.cursor.length > 512)) {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'cursor is invalid' });
    }
    const page = await deps.callLog.list(businessId, { limit, cursor: query.cursor as string | undefined });
    const foreign = await foreignLinks(deps, businessId, page.calls);
    const calls = await Promise.all(
      page.calls.map(async (c) => callJson(c, await cacheStateOf(deps, c, foreign), foreign)),
    );
    return { calls, next_cursor: page.nextCursor };
  });

  app.get('/api/calls/:callSid', async (request) => {
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    const { businessId } = await authenticate(deps, request);
    const call = await deps.callLog.getForBusiness(businessId, callSid);
    if (!call) throw createError('RECGATE_NOT_FOUND');
    const foreign = await foreignLinks(deps, businessId, [call]);
    return callJson(call, await cacheStateOf(deps, call, foreign), foreign);
  });

  app.post('/api/calls/:callSid/playback-url', async (request) => {
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    // `?channels=2` / `?format=wav`: a URL for that variant, which the signature binds.
    const variant = parseVariant(request.query as Record<string, unknown>);
    const { businessId } = await authenticate(deps, request);
    const call = await deps.callLog.getForBusiness(businessId, callSid);
    if (!call) throw createError('RECGATE_NOT_FOUND');
    const expiresAt = new Date(Date.now() + deps.config.playbackUrlTtlS * 1000);
    const signed = deps.signer.sign(
      businessId,
      callSid,
      expiresAt,
      isCanonical(variant) ? undefined : variant,
    );
    const params = new URLSearchParams({ ...variantQuery(variant), ...signed });
    const base = deps.config.publicUrl ?? `${request.protocol}://${request.host}`;
    return {
      // Under the prefix these routes are mounted at (an embedding app's), where the download is too.
      url: `${base.replace(/\/+$/, '')}${app.prefix}/api/calls/${callSid}/download?${params}`,
      expires_at: expiresAt.toISOString(),
    };
  });
}
