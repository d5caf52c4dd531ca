import type { FastifyInstance } from 'fastify';
import { createError } from '../../errors.js';
import { isCallSid, isRecordingSid } from '../../sid.js';
import type { AppDeps } from '../deps.js';

/**
 * Twilio's recordingStatusCallback. A completed recording is remembered for its call, so the first play
 * needs no upstream lookup; a deleted or failed one is remembered as such.
 */
export function webhookRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.register(async (scope) => {
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: 64 * 1024 },
      (_request, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      },
    );

    scope.post('/webhooks/twilio/recording-status', async (request, reply) => {
      const token = deps.config.twilioAuthToken;
      const signature = request.headers['x-twilio-signature'];
      if (!token || typeof signature !== 'string') throw createError('RECGATE_WEBHOOK_SIGNATURE');
      const params = (request.body ?? {}) as Record<string, string>;
      if (typeof params !== 'object') throw createError('RECGATE_INVALID_REQUEST');
      const base = deps.config.publicUrl ?? `${request.protocol}://${request.host}`;
      const url = `${base.replace(/\/+$/, '')}${request.url}`;
      // The SDK's webhooks module alone (its root loads every REST resource), and only once a webhook comes.
      const { validateRequest } = await import('twilio/lib/webhooks/webhooks.js');
      if (!validateRequest(token, signature, url, params)) throw createError('RECGATE_WEBHOOK_SIGNATURE');

      const { CallSid, RecordingSid, RecordingStatus, RecordingDuration } = params;
      if (!isCallSid(CallSid) || !isRecordingSid(RecordingSid)) {
        throw createError('RECGATE_INVALID_REQUEST', { message: 'CallSid and RecordingSid are required' });
      }
      const call = await deps.callLog.get(CallSid);
      request.log.info(
        {
          event: 'recording_status',
          callSid: CallSid,
          recordingSid: RecordingSid,
          status: RecordingStatus,
          known: !!call,
        },
        'recording status callback',
      );
      if (
        call &&
        RecordingStatus === 'completed' &&
        (call.recordingState !== 'available' || !call.recordingSid)
      ) {
        const duration = Number(RecordingDuration);
        await deps.callLog.setResolution(CallSid, {
          recordingState: 'available',
          recordingSid: RecordingSid,
          recordingOwnerCallSid: CallSid,
          recordingDurationS: Number.isFinite(duration) ? duration : null,
        });
      } else if (call && (RecordingStatus === 'deleted' || RecordingStatus === 'absent')) {
        await deps.callLog.setResolutionByRecording(RecordingSid, { recordingState: 'deleted' });
      }
      return reply.code(204).send();
    });
  });
}
