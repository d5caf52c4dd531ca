/**
 * `recgate accounts …`: the business → Twilio account mapping (src/accounts/), on the database of the
 * configuration, as `/api/admin/businesses/{id}/twilio-account` manages it.
 *
 * - `list [--json]`: every business not on the main account.
 * - `show --business ID`: one business's mapping (JSON, as the admin API answers; never a secret).
 * - `set --business ID (--main | --subaccount AC… | --own AC…)`: with `--own`, the credentials come from
 *   `RECGATE_ACCOUNT_AUTH_TOKEN`, or `RECGATE_ACCOUNT_API_KEY` + `RECGATE_ACCOUNT_API_SECRET`, never from
 *   flags (which `ps` and shell histories show); they are sealed under `RECGATE_CREDENTIALS_KEY`.
 * - `remove --business ID`: back to the main account.
 * - `rotate-key`: re-seals every business's own credentials under `RECGATE_CREDENTIALS_KEY`, opening them
 *   with it or with `RECGATE_CREDENTIALS_KEY_PREVIOUS`; exit 1 if any did not open (named on stderr).
 *
 * Gateways see a change within 5 s (how long they trust a mapping they read). Exit codes as every admin
 * command: 0 success, 1 failure, 2 bad usage.
 */
import { applyChange, rotateKey, viewOf } from '../accounts/manage.js';
import { openAccountStore } from '../accounts/open.js';
import type { AccountStore } from '../accounts/store.js';
import { parseDatabaseUrl } from '../call-log/index.js';
import { type ConfigInput, sealerOf } from '../config/config.js';
import { adminConfig, type CommandIo, EXIT_FAILED, EXIT_OK, messageOf, openAdmin } from './admin.js';

export type AccountsAction =
  | { kind: 'list'; json: boolean }
  | { kind: 'show'; businessId: string }
  | {
      kind: 'set';
      businessId: string;
      target: { kind: 'main' } | { kind: 'subaccount' | 'own'; accountSid: string };
    }
  | { kind: 'remove'; businessId: string }
  | { kind: 'rotate-key' };

export async function runAccounts(
  action: AccountsAction,
  flags: ConfigInput,
  io: CommandIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const fail = (message: string) => {
    io.err(`recgate accounts ${action.kind}: ${message}`);
    return EXIT_FAILED;
  };
  let admin: Awaited<ReturnType<typeof openAdmin>>;
  let store: AccountStore;
  try {
    const config = adminConfig(flags, env);
    // Opening the call log migrates the database, so the accounts table exists.
    admin = await openAdmin(config, { cache: false, upstream: false }, env);
    try {
      store = await openAccountStore(parseDatabaseUrl(config.databaseUrl, config.dataDir));
    } catch (err) {
      await admin.close();
      throw err;
    }
  } catch (err) {
    return fail(messageOf(err));
  }
  const main = admin.config.twilioAccountSid ?? '';
  try {
    switch (action.kind) {
      case 'list': {
        const views = (await store.list()).map((row) => viewOf(row.businessId, row, main));
        if (action.json) io.out(JSON.stringify({ main_account_sid: main || null, businesses: views }));
        else if (views.length === 0) io.out('every business is on the main account');
        else {
          for (const v of views) {
            const key = v.credentials === null ? '' : `  credentials sealed with key ${v.credentials.key_id}`;
            io.out(`${v.business_id}  ${v.kind}  ${v.account_sid}${key}`);
          }
        }
        return EXIT_OK;
      }
      case 'show':
        io.out(JSON.stringify(viewOf(action.businessId, await store.get(action.businessId), main)));
        return EXIT_OK;
      case 'remove': {
        const removed = await store.delete(action.businessId);
        io.out(
          removed
            ? `${action.businessId}: back on the main account`
            : `${action.businessId}: was already on the main account`,
        );
        return EXIT_OK;
      }
      case 'set': {
        const { target } = action;
        const view = await applyChange(
          store,
          sealerOf(admin.config),
          action.businessId,
          target.kind === 'main'
            ? { kind: 'main' }
            : {
                kind: target.kind,
                accountSid: target.accountSid,
                ...(target.kind === 'own'
                  ? {
                      authToken: env.RECGATE_ACCOUNT_AUTH_TOKEN,
                      apiKey: env.RECGATE_ACCOUNT_API_KEY,
                      apiSecret: env.RECGATE_ACCOUNT_API_SECRET,
                    }
                  : {}),
              },
          main,
        );
        io.out(JSON.stringify(view));
        return EXIT_OK;
      }
      case 'rotate-key': {
        const sealer = sealerOf(admin.config);
        if (sealer === undefined) return fail('RECGATE_CREDENTIALS_KEY is not set');
        const report = await rotateKey(store, sealer);
        io.out(
          `re-sealed ${report.resealed.length} under key ${sealer.keyId}, ${report.current.length} already under it, ${report.failed.length} failed`,
        );
        for (const f of report.failed) io.err(`recgate accounts rotate-key: ${f.businessId}: ${f.reason}`);
        return report.failed.length === 0 ? EXIT_OK : EXIT_FAILED;
      }
    }
  } catch (err) {
    return fail(messageOf(err));
  } finally {
    await store.close();
    await admin.close();
  }
}
