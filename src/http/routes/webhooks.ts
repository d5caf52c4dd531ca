import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createError } from '../../errors.js';
import { isAccountSid, isCallSid, isRecordingSid } from '../../sid.js';
import type { AppDeps } from '../deps.js';

/**
 * Twilio's recordingStatusCallback: checks the signature and hands the report to the recording state
 * (`resolution/state.ts`), which decides what it changes. A completed recording is remembered for its call,
 * so the first play needs no upstream lookup, and queued for prefetch, so the first play is a hit; a deleted
 * one is remembered as such and its local copy removed.
 *
 * The signature is checked with the auth token of the account the form's `AccountSid` names (see
 * src/accounts/directory.ts): the main account's, a subaccount's (read from Twilio with the main
 * credentials), or a business's own. An account no business is mapped to is refused like a bad signature.
 * A report about a call registered to a business served by another account is refused (403
 * RECGATE_FORBIDDEN): one account's webhooks never change another account's calls.
 */
export function webhookRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.register(async (scope) => {
    // The form's limit is `--body-limit`, as for every other body: given here, because a parser's own
    // limit wins over the server's (and, embedded, over the host application's).
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: deps.config.bodyLimitBytes },
      (_request, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      },
    );

    scope.post('/webhooks/twilio/recording-status', async (request, reply) => {
      const signature = request.headers['x-twilio-signature'];
      if (typeof signature !== 'string') throw createError('RECGATE_WEBHOOK_SIGNATURE');
      const params = (request.body ?? {}) as Record<string, string>;
      if (typeof params !== 'object') throw createError('RECGATE_INVALID_REQUEST');
      const account = await webhookAccount(deps, params.AccountSid);
      const token = account?.token;
      if (!token) throw createError('RECGATE_WEBHOOK_SIGNATURE');
      const base = deps.config.publicUrl ?? `${request.protocol}://${request.host}`;
      const url = `${base.replace(/\/+$/, '')}${request.url}`;
      // The SDK's webhooks module alone (its root loads every REST resource), and only once a webhook comes.
      const { validateRequest } = await import('twilio/lib/webhooks/webhooks.js');
      if (!validateRequest(token, signature, url, params)) throw createError('RECGATE_WEBHOOK_SIGNATURE');

      const { CallSid, RecordingSid, RecordingStatus, RecordingDuration } = params;
      if (!isCallSid(CallSid) || !isRecordingSid(RecordingSid)) {
        throw createError('RECGATE_INVALID_REQUEST', { message: 'CallSid and RecordingSid are required' });
      }
      const registered = await deps.callLog.get(CallSid);
      if (registered !== undefined && deps.accounts !== undefined) {
        const served = await deps.accounts.directory.account(registered.businessId);
        if (served.accountSid !== account!.sid) {
          request.log.warn(
            { event: 'webhook_account_mismatch', callSid: CallSid, accountSid: account!.sid },
            "recording status from an account that does not serve the call's business",
          );
          throw createError('RECGATE_FORBIDDEN');
        }
      }
      const duration = Number(RecordingDuration);
      const outcome = await deps.state.statusCallback(
        {
          callSid: CallSid,
          recordingSid: RecordingSid,
          status: RecordingStatus ?? '',
          durationS: RecordingDuration !== undefined && Number.isFinite(duration) ? duration : null,
        },
        registered,
      );
      // A completed recording is fetched now, so its first play is a hit ('stored' needs a registered call).
      if (outcome === 'stored' && deps.prefetch !== undefined && registered !== undefined) {
        await deps.prefetch.enqueue({
          recordingSid: RecordingSid,
          callSid: CallSid,
          businessId: registered.businessId,
        });
      }
      // A recording Twilio deleted goes from here too, unless the operator keeps such copies (the state
      // decides, as for a 404). A removal that fails answers 5xx, so Twilio sends the report again.
      if (outcome === 'deleted') {
        await deps.state.removeDeletedCopies(CallSid, RecordingSid, request.log as Logger);
      }
      request.log.info(
        {
          event: 'recording_status',
          callSid: CallSid,
          recordingSid: RecordingSid,
          status: RecordingStatus,
          outcome,
        },
        'recording status callback',
      );
      return reply.code(204).send();
    });
  });
}

/**
 * The account a webhook speaks for and the token that signs it: the form's `AccountSid`, or the main
 * account when it has none (and, without an account mapping, always the main account's token). `undefined` when the account is
 * malformed or unknown.
 */
async function webhookAccount(
  deps: AppDeps,
  accountSid: string | undefined,
): Promise<{ sid: string | undefined; token: string | undefined } | undefined> {
  if (deps.accounts === undefined) return { sid: accountSid, token: deps.config.twilioAuthToken };
  if (accountSid === undefined || accountSid === '') {
    return { sid: deps.accounts.directory.mainAccountSid, token: deps.config.twilioAuthToken };
  }
  if (!isAccountSid(accountSid)) return undefined;
  return { sid: accountSid, token: await deps.accounts.directory.webhookToken(accountSid) };
}
