/**
 * The admin API of the business → Twilio account mapping (src/accounts/): which account serves a business.
 * Admin token only. Answers never carry a secret: own credentials show as stored, with the id of the key
 * that sealed them.
 *
 * - `GET /api/admin/businesses/{businessId}/twilio-account`: the mapping (`kind: "main"` when none is set).
 * - `PUT` the same path, body `{"kind": "main"}`, `{"kind": "subaccount", "account_sid": "AC…"}` or
 *   `{"kind": "own", "account_sid": "AC…", "auth_token": "…"}` (or `"api_key": "SK…", "api_secret": "…"`,
 *   optionally with `auth_token` for webhooks).
 * - `DELETE` the same path: back to the main account.
 * - `GET /api/admin/twilio-accounts`: every business not on the main account.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type AccountView, applyChange, viewOf } from '../../accounts/manage.js';
import { isBusinessId } from '../../auth/jwt.js';
import { createError } from '../../errors.js';
import { requireAdmin } from '../auth.js';
import type { AppDeps } from '../deps.js';

const PATH = '/api/admin/businesses/:businessId/twilio-account';
const FIELDS = new Set(['kind', 'account_sid', 'auth_token', 'api_key', 'api_secret']);

export function accountRoutes(app: FastifyInstance, deps: AppDeps): void {
  app.get(PATH, async (request) => {
    const { accounts, businessId } = target(deps, request);
    return viewOf(businessId, await accounts.store.get(businessId), accounts.directory.mainAccountSid);
  });

  app.put(PATH, async (request, reply) => {
    const { accounts, businessId } = target(deps, request);
    const body = request.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw createError('RECGATE_INVALID_REQUEST', { message: 'body must be a JSON object' });
    }
    const fields = body as Record<string, unknown>;
    const unknown = Object.keys(fields).find((k) => !FIELDS.has(k));
    if (unknown !== undefined) {
      throw createError('RECGATE_INVALID_REQUEST', {
        message: `body: unknown field ${JSON.stringify(unknown)}`,
      });
    }
    const before = await accounts.store.get(businessId);
    let view: AccountView | undefined;
    try {
      view = await applyChange(
        accounts.store,
        accounts.sealer,
        businessId,
        {
          kind: fields.kind,
          accountSid: fields.account_sid,
          authToken: fields.auth_token,
          apiKey: fields.api_key,
          apiSecret: fields.api_secret,
        },
        accounts.directory.mainAccountSid,
      );
    } finally {
      // The old account and the new one: the new one's webhooks are accepted here at once.
      accounts.directory.forget(businessId, ...(view === undefined ? [] : [view.account_sid]));
    }
    request.log.info(
      { event: 'business_account_set', businessId, kind: view.kind, accountSid: view.account_sid },
      'business account set',
    );
    return reply.code(before === undefined && view.kind !== 'main' ? 201 : 200).send(view);
  });

  app.delete(PATH, async (request) => {
    const { accounts, businessId } = target(deps, request);
    const before = await accounts.store.get(businessId);
    const removed = await accounts.store.delete(businessId);
    accounts.directory.forget(businessId, ...(before === undefined ? [] : [before.accountSid]));
    request.log.info({ event: 'business_account_removed', businessId, removed }, 'business account removed');
    return { ...viewOf(businessId, undefined, accounts.directory.mainAccountSid), removed };
  });

  app.get('/api/admin/twilio-accounts', async (request) => {
    requireAdmin(deps, request);
    const accounts = configured(deps);
    const main = accounts.directory.mainAccountSid;
    return {
      main_account_sid: main,
      businesses: (await accounts.store.list()).map((row) => viewOf(row.businessId, row, main)),
    };
  });
}

function target(deps: AppDeps, request: FastifyRequest) {
  requireAdmin(deps, request);
  const accounts = configured(deps);
  const { businessId } = request.params as { businessId: string };
  if (!isBusinessId(businessId)) {
    throw createError('RECGATE_INVALID_REQUEST', {
      message: 'businessId must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$',
    });
  }
  return { accounts, businessId };
}

function configured(deps: AppDeps): NonNullable<AppDeps['accounts']> {
  if (deps.accounts === undefined) {
    throw createError('RECGATE_ROUTE_NOT_FOUND', { message: 'Account mapping is not configured' });
  }
  return deps.accounts;
}
