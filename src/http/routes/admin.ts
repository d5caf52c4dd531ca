import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { isBusinessId } from '../../auth/jwt.js';
import type { CallUpsert } from '../../call-log/call-log.js';
import { createError } from '../../errors.js';
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
}
