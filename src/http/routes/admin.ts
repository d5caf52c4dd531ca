import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isBusinessId } from '../../auth/jwt.js';
import type { CallUpsert } from '../../call-log/call-log.js';
import { createError } from '../../errors.js';
import { type PurgeResult, purgeRecording } from '../../resolution/purge.js';
import { isCallSid, isRecordingSid, parseCallSid } from '../../sid.js';
import { requireAdmin } from '../auth.js';
import type { AppDeps } from '../deps.js';
import { callJson } from './calls.js';

const text = (field: string, max: number) =>
  z.string({ message: `${field} must be a string` }).max(max, `${field} must be at most ${max} characters`);

const Body = z
  .object({
    business_id: z
      .string()
      .refine(isBusinessId, 'business_id must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    parent_call_sid: z
      .string()
      .refine(isCallSid, 'parent_call_sid must match ^CA[0-9a-f]{32}$')
      .nullable()
      .optional(),
    recording_sid: z
      .string()
      .refine(isRecordingSid, 'recording_sid must match ^RE[0-9a-f]{32}$')
      .nullable()
      .optional(),
    direction: text('direction', 32).nullable().optional(),
    from: text('from', 64).nullable().optional(),
    to: text('to', 64).nullable().optional(),
    started_at: z.iso
      .datetime({ offset: true, message: 'started_at must be an ISO 8601 date-time' })
      .nullable()
      .optional(),
    duration_s: z.number().int().min(0, 'duration_s must be a non-negative integer').nullable().optional(),
  })
  .strict();

export function adminRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.put('/api/admin/calls/:callSid', async (request, reply) => {
    requireAdmin(deps, request);
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    const parsed = Body.safeParse(request.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw createError('RECGATE_INVALID_REQUEST', {
        message: issue ? `${issue.path.join('.') || 'body'}: ${issue.message}` : 'Invalid body',
      });
    }
    const b = parsed.data;
    if (b.parent_call_sid === callSid) {
      throw createError('RECGATE_INVALID_REQUEST', {
        message: 'parent_call_sid must differ from the call itself',
      });
    }
    const input: CallUpsert = { businessId: b.business_id, callSid };
    if (b.parent_call_sid !== undefined)
      input.parentCallSid = b.parent_call_sid as CallUpsert['parentCallSid'];
    if (b.recording_sid !== undefined) input.recordingSid = b.recording_sid as CallUpsert['recordingSid'];
    if (b.direction !== undefined) input.direction = b.direction;
    if (b.from !== undefined) input.from = b.from;
    if (b.to !== undefined) input.to = b.to;
    if (b.started_at !== undefined)
      input.startedAt = b.started_at === null ? null : new Date(b.started_at).toISOString();
    if (b.duration_s !== undefined) input.durationS = b.duration_s;
    const { call, created } = await deps.state.register(input);
    return reply.code(created ? 201 : 200).send({ business_id: call.businessId, ...callJson(call) });
  });

  // Purge (see resolution/purge.ts): marks the call and its recording's other calls, then removes the file.
  app.delete('/api/admin/calls/:callSid/recording', async (request, reply) => {
    requireAdmin(deps, request);
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    const abort = new AbortController();
    const onClose = () => abort.abort(createError('RECGATE_CLIENT_CLOSED'));
    reply.raw.once('close', onClose);
    let result: PurgeResult;
    try {
      result = await purgeRecording(deps, callSid, { signal: abort.signal, log: request.log as Logger });
    } finally {
      reply.raw.off('close', onClose);
    }
    return reply.send({
      call_sid: result.callSid,
      recording_sid: result.recordingSid,
      owner_call_sid: result.owner,
      removed_bytes: result.removedBytes,
      calls_marked: result.marked,
    });
  });

  // Who listened to this call: the plays table, newest first (needs --audit-db).
  app.get('/api/admin/calls/:callSid/plays', async (request, reply) => {
    requireAdmin(deps, request);
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    const query = PlaysQuery.safeParse(request.query);
    if (!query.success) {
      throw createError('RECGATE_INVALID_REQUEST', { message: query.error.issues[0]?.message });
    }
    const page = await deps.callLog.listPlays(callSid, {
      limit: query.data.limit,
      cursor: query.data.cursor,
    });
    return reply.send({
      plays: page.plays.map((p) => ({
        played_at: p.playedAt,
        business_id: p.businessId,
        call_sid: p.callSid,
        recording_sid: p.recordingSid,
        bytes: p.bytes,
        status: p.status,
        request_id: p.requestId,
      })),
      next_cursor: page.nextCursor,
    });
  });
}

const PlaysQuery = z.object({
  limit: z.coerce
    .number({ message: 'limit must be an integer from 1 to 200' })
    .int('limit must be an integer from 1 to 200')
    .min(1, 'limit must be an integer from 1 to 200')
    .max(200, 'limit must be an integer from 1 to 200')
    .default(50),
  cursor: z.string().max(64, 'cursor is malformed').optional(),
});
