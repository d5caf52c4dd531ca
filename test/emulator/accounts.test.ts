import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CreatedAccount, Emulator } from '../../src/emulator/index.js';
import { API_KEY_SECRET, API_KEY_SID, basic, control, start } from './helpers.js';

/** GET `path` under account `account`'s REST root with `user:password`. */
function get(emulator: Emulator, account: string, path: string, user: string, password: string) {
  return fetch(`${emulator.url}/2010-04-01/Accounts/${account}${path}`, {
    headers: { authorization: basic(user, password) },
  });
}

describe('emulator accounts and subaccounts', () => {
  let emulator: Emulator;
  let subA: CreatedAccount;
  let subB: CreatedAccount;
  let other: CreatedAccount;
  before(async () => {
    emulator = await start();
    subA = await emulator.createAccount({ friendly_name: 'Business A' });
    const res = await control(emulator, 'accounts', { auth_token: 'token-of-b' });
    assert.equal(res.status, 201);
    subB = (await res.json()) as CreatedAccount;
    other = await emulator.createAccount({ parent_account_sid: null });
  });
  after(() => emulator.close());

  it('creates subaccounts of the main account by default, and independent accounts on request', () => {
    assert.equal(subA.parent_account_sid, emulator.accountSid);
    assert.equal(subB.auth_token, 'token-of-b');
    assert.match(subB.account_sid, /^AC[0-9a-f]{32}$/);
    assert.notEqual(subA.account_sid, subB.account_sid);
    assert.equal(other.parent_account_sid, null);
  });

  it("serves a subaccount's recording to its own credentials and to the parent's, never to a sibling's", async () => {
    const rec = await emulator.createRecording({ account_sid: subA.account_sid, bytes: 3000 });
    assert.equal(rec.account_sid, subA.account_sid);
    assert.ok(rec.media_url?.includes(`/Accounts/${subA.account_sid}/Recordings/`));
    const media = `/Recordings/${rec.recording_sid}.mp3`;
    const own = await get(emulator, subA.account_sid, media, subA.account_sid, subA.auth_token);
    assert.equal(own.status, 200);
    assert.equal((await own.arrayBuffer()).byteLength, 3000);
    const parent = await get(emulator, subA.account_sid, media, emulator.accountSid, emulator.authToken);
    assert.equal(parent.status, 200);
    await parent.arrayBuffer();
    const viaKey = await get(
      emulator,
      subA.account_sid,
      `/Calls/${rec.call_sid}.json`,
      API_KEY_SID,
      API_KEY_SECRET,
    );
    assert.equal(viaKey.status, 200);
    assert.equal(((await viaKey.json()) as { account_sid: string }).account_sid, subA.account_sid);

    // A sibling, with its own credentials, in its own path or in A's: Twilio's 404 20404.
    for (const account of [subA.account_sid, subB.account_sid]) {
      const res = await get(emulator, account, media, subB.account_sid, subB.auth_token);
      assert.equal(res.status, 404, account);
      assert.equal(((await res.json()) as { code: number }).code, 20404);
    }
    // The parent's own path does not list a subaccount's resources.
    const inMain = await get(emulator, emulator.accountSid, media, emulator.accountSid, emulator.authToken);
    assert.equal(inMain.status, 404);
    await inMain.arrayBuffer();
    const list = await get(
      emulator,
      emulator.accountSid,
      `/Calls/${rec.call_sid}/Recordings.json`,
      emulator.accountSid,
      emulator.authToken,
    );
    assert.equal(list.status, 404);
    await list.arrayBuffer();
    // A subaccount reaches nothing of its parent's.
    const up = await emulator.createRecording({ bytes: 2000 });
    const res = await get(
      emulator,
      emulator.accountSid,
      `/Calls/${up.call_sid}.json`,
      subA.account_sid,
      subA.auth_token,
    );
    assert.equal(res.status, 404);
    await res.arrayBuffer();

    const stats = emulator.stats();
    assert.deepEqual(stats.media_requests_by_credential[subA.account_sid], { [rec.recording_sid!]: 1 });
    // The main account asked twice: once in A's path (served), once in its own (refused).
    assert.deepEqual(stats.media_requests_by_credential[emulator.accountSid], { [rec.recording_sid!]: 2 });
    // The sibling's try in its own path is counted (and was refused); its try in A's path never got that far.
    assert.deepEqual(stats.media_requests_by_credential[subB.account_sid], { [rec.recording_sid!]: 1 });
    assert.deepEqual(stats.media_requests_by_account[subA.account_sid], { [rec.recording_sid!]: 2 });
    assert.deepEqual(stats.media_requests_by_account[subB.account_sid], { [rec.recording_sid!]: 1 });
  });

  it('answers wrong credentials with 401 20003, and an independent account only to its own', async () => {
    const wrong = await get(emulator, subA.account_sid, '/Calls.json', subA.account_sid, 'nope');
    assert.equal(wrong.status, 401);
    assert.equal(((await wrong.json()) as { code: number }).code, 20003);
    const mainToOther = await get(
      emulator,
      other.account_sid,
      '/Calls.json',
      emulator.accountSid,
      emulator.authToken,
    );
    assert.equal(mainToOther.status, 404);
    await mainToOther.arrayBuffer();
    const own = await get(emulator, other.account_sid, '/Calls.json', other.account_sid, other.auth_token);
    assert.equal(own.status, 200);
    await own.arrayBuffer();
  });

  it("shows a subaccount's auth token to its parent in the Account resource", async () => {
    const res = await fetch(`${emulator.url}/2010-04-01/Accounts/${subB.account_sid}.json`, {
      headers: { authorization: basic(emulator.accountSid, emulator.authToken) },
    });
    assert.equal(res.status, 200);
    const json = (await res.json()) as Record<string, unknown>;
    assert.equal(json.sid, subB.account_sid);
    assert.equal(json.owner_account_sid, emulator.accountSid);
    assert.equal(json.auth_token, 'token-of-b');
  });

  it('refuses bad account input and calls that would cross accounts, naming the field', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ account_sid: 'ACnope' }, /account_sid/],
      [{ account_sid: subA.account_sid }, /account_sid: already exists/],
      [{ parent_account_sid: subA.account_sid }, /cannot own subaccounts/],
      [{ parent_account_sid: `AC${'9'.repeat(32)}` }, /no such account/],
      [{ unknown: 1 }, /unknown|Unrecognized/i],
    ];
    for (const [body, message] of cases) {
      const res = await control(emulator, 'accounts', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(((await res.json()) as { error: { message: string } }).error.message, message);
    }
    const rec = await emulator.createRecording({ account_sid: subA.account_sid, bytes: 2000 });
    await assert.rejects(
      emulator.createRecording({ account_sid: subB.account_sid, call_sid: rec.call_sid! as string }),
      /call_sid: the call belongs to another account/,
    );
    await assert.rejects(
      emulator.createRecording({ account_sid: `AC${'8'.repeat(32)}` }),
      /account_sid: no such account/,
    );
  });
});
