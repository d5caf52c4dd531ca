/**
 * `recgate accounts`: set, show, list, remove and rotate-key against a SQLite call log in a temporary data
 * dir, in process; and the command line itself once, for its usage errors.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { SqliteAccountStore } from '../../src/accounts/sqlite.js';
import { type AccountsAction, runAccounts } from '../../src/cli/accounts.js';
import { tempDir } from '../helpers/common.js';
import { recgateArgs } from '../helpers/recgate-command.js';
import { JWT_SECRET } from '../helpers/stack.js';

const MAIN = `AC${'a'.repeat(32)}`;
const OWN = `AC${'c'.repeat(32)}`;
const SUB = `AC${'d'.repeat(32)}`;
const KEY1 = randomBytes(32).toString('hex');
const KEY2 = randomBytes(32).toString('base64');
const TOKEN = 'own-token-never-printed';

async function run(dataDir: string, action: AccountsAction, env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runAccounts(
    action,
    { dataDir },
    { out: (l) => out.push(l), err: (l) => err.push(l), isTTY: false },
    { RECGATE_JWT_SECRET: JWT_SECRET, TWILIO_ACCOUNT_SID: MAIN, ...env },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('recgate accounts', () => {
  it('sets, shows, lists and removes mappings, sealing own credentials and never printing them', async (t) => {
    const dir = tempDir(t);
    const own = await run(
      dir,
      { kind: 'set', businessId: 'biz-c', target: { kind: 'own', accountSid: OWN } },
      { RECGATE_CREDENTIALS_KEY: KEY1, RECGATE_ACCOUNT_AUTH_TOKEN: TOKEN },
    );
    assert.equal(own.code, 0, own.err);
    assert.equal(JSON.parse(own.out).kind, 'own');
    const sub = await run(dir, {
      kind: 'set',
      businessId: 'biz-a',
      target: { kind: 'subaccount', accountSid: SUB },
    });
    assert.equal(sub.code, 0, sub.err);
    const list = await run(dir, { kind: 'list', json: false });
    assert.equal(
      list.out,
      [
        `biz-a  subaccount  ${SUB}`,
        `biz-c  own  ${OWN}  credentials sealed with key ${JSON.parse(own.out).credentials.key_id}`,
      ].join('\n'),
    );
    const show = await run(dir, { kind: 'show', businessId: 'biz-c' });
    assert.equal(JSON.parse(show.out).account_sid, OWN);
    for (const o of [own, sub, list, show]) assert.ok(!`${o.out}${o.err}`.includes(TOKEN));
    const store = new SqliteAccountStore(join(dir, 'recgate.db'));
    try {
      assert.ok(!(await store.get('biz-c'))!.sealedCredentials!.includes(TOKEN));
    } finally {
      await store.close();
    }
    assert.equal(
      (await run(dir, { kind: 'remove', businessId: 'biz-a' })).out,
      'biz-a: back on the main account',
    );
    assert.equal(JSON.parse((await run(dir, { kind: 'show', businessId: 'biz-a' })).out).kind, 'main');
    const json = JSON.parse((await run(dir, { kind: 'list', json: true })).out);
    assert.deepEqual(
      json.businesses.map((b: { business_id: string }) => b.business_id),
      ['biz-c'],
    );
  });

  it('refuses own credentials without a key, or without credentials, naming what is missing', async (t) => {
    const dir = tempDir(t);
    const set = { kind: 'set', businessId: 'biz-c', target: { kind: 'own', accountSid: OWN } } as const;
    const noKey = await run(dir, set, { RECGATE_ACCOUNT_AUTH_TOKEN: TOKEN });
    assert.equal(noKey.code, 1);
    assert.match(noKey.err, /RECGATE_CREDENTIALS_KEY/);
    const noCredentials = await run(dir, set, { RECGATE_CREDENTIALS_KEY: KEY1 });
    assert.equal(noCredentials.code, 1);
    assert.match(noCredentials.err, /auth_token, or api_key with api_secret, is required/);
    const badKey = await run(dir, { kind: 'list', json: false }, { RECGATE_CREDENTIALS_KEY: 'short' });
    assert.equal(badKey.code, 1);
    assert.match(badKey.err, /RECGATE_CREDENTIALS_KEY must be 32 bytes/);
  });

  it('rotate-key re-seals under the new key with the old one as previous, and names what does not open', async (t) => {
    const dir = tempDir(t);
    for (const business of ['biz-1', 'biz-2']) {
      const set = await run(
        dir,
        { kind: 'set', businessId: business, target: { kind: 'own', accountSid: OWN } },
        {
          RECGATE_CREDENTIALS_KEY: KEY1,
          RECGATE_ACCOUNT_API_KEY: `SK${'e'.repeat(32)}`,
          RECGATE_ACCOUNT_API_SECRET: 's3cret',
        },
      );
      assert.equal(set.code, 0, set.err);
    }
    // The new key alone cannot open what the old one sealed.
    const early = await run(dir, { kind: 'rotate-key' }, { RECGATE_CREDENTIALS_KEY: KEY2 });
    assert.equal(early.code, 1);
    assert.match(early.err, /biz-1: does not open/);
    const rotated = await run(
      dir,
      { kind: 'rotate-key' },
      { RECGATE_CREDENTIALS_KEY: KEY2, RECGATE_CREDENTIALS_KEY_PREVIOUS: KEY1 },
    );
    assert.equal(rotated.code, 0, rotated.err);
    assert.match(rotated.out, /^re-sealed 2 under key [0-9a-f]{8}, 0 already under it, 0 failed$/);
    // Now the old key can go.
    const again = await run(dir, { kind: 'rotate-key' }, { RECGATE_CREDENTIALS_KEY: KEY2 });
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /re-sealed 0 under key [0-9a-f]{8}, 2 already under it, 0 failed/);
    assert.equal((await run(dir, { kind: 'rotate-key' })).code, 1);
  });

  it('exits 2 for bad usage on the command line', async () => {
    const result = await promisify(execFile)(
      process.execPath,
      [...recgateArgs(), 'accounts', 'set', '--business', 'b', '--main', '--subaccount', SUB],
      { env: { PATH: process.env.PATH ?? '' }, timeout: 60_000 },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(result.code, 2);
    assert.match(result.stderr, /give one of --main, --subaccount or --own/);
  });
});
