/**
 * Businesses on different Twilio accounts, end to end against the emulator: business A on subaccount A,
 * business B on subaccount B, business C on an account of its own (own credentials, sealed). A recording of
 * A's subaccount is never fetched through B's account nor served to B, the parent-call fallback stays in
 * the business's account, webhooks are checked with the right account's token, and the admin API never
 * shows a secret.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { getExpectedTwilioSignature } from 'twilio/lib/webhooks/webhooks.js';
import { request } from 'undici';
import { SqliteAccountStore } from '../../src/accounts/sqlite.js';
import type { CreatedAccount } from '../../src/emulator/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';
import { metric as metricOf } from '../limits/admission-helpers.js';

const KEY = randomBytes(32).toString('hex');
const callSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

describe('businesses on separate Twilio accounts', () => {
  let stack: Stack;
  let subA: CreatedAccount;
  let subB: CreatedAccount;
  let own: CreatedAccount;
  const logs = captureLogs({ plain: true });

  async function admin(method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown) {
    const res = await request(`${stack.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.body.text();
    return { status: res.statusCode, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  async function play(call: string, business: string) {
    const res = await request(`${stack.url}/api/calls/${call}/download`, {
      headers: { authorization: `Bearer ${await stack.token(business)}` },
    });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, bytes };
  }

  /** Posts a recording-status webhook for `params`, signed with `token`. */
  async function webhook(params: Record<string, string>, token: string): Promise<number> {
    const url = `${stack.url}/webhooks/twilio/recording-status`;
    const res = await request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-twilio-signature': getExpectedTwilioSignature(token, url, params),
      },
      body: new URLSearchParams(params).toString(),
    });
    await res.body.dump();
    return res.statusCode;
  }

  before(async () => {
    stack = await startStack({ config: { credentialsKey: KEY }, logger: logs.logger });
    subA = await stack.emulator.createAccount({ friendly_name: 'A' });
    subB = await stack.emulator.createAccount({ friendly_name: 'B' });
    own = await stack.emulator.createAccount({ parent_account_sid: null, auth_token: 'own-account-token' });
    const a = await admin('PUT', '/api/admin/businesses/biz-a/twilio-account', {
      kind: 'subaccount',
      account_sid: subA.account_sid,
    });
    assert.equal(a.status, 201, a.text);
    const b = await admin('PUT', '/api/admin/businesses/biz-b/twilio-account', {
      kind: 'subaccount',
      account_sid: subB.account_sid,
    });
    assert.equal(b.status, 201, b.text);
    const c = await admin('PUT', '/api/admin/businesses/biz-c/twilio-account', {
      kind: 'own',
      account_sid: own.account_sid,
      auth_token: own.auth_token,
    });
    assert.equal(c.status, 201, c.text);
  });
  after(() => stack?.close());

  it('the admin API shows the mapping, never a secret, and stores own credentials sealed', async () => {
    const c = await admin('GET', '/api/admin/businesses/biz-c/twilio-account');
    assert.equal(c.status, 200);
    assert.equal(c.json.kind, 'own');
    assert.equal(c.json.account_sid, own.account_sid);
    assert.match(String((c.json.credentials as { key_id: string }).key_id), /^[0-9a-f]{8}$/);
    assert.ok(!c.text.includes(own.auth_token));
    const list = await admin('GET', '/api/admin/twilio-accounts');
    assert.equal(list.json.main_account_sid, stack.emulator.accountSid);
    assert.deepEqual(
      (list.json.businesses as Array<{ business_id: string; kind: string }>).map((r) => [
        r.business_id,
        r.kind,
      ]),
      [
        ['biz-a', 'subaccount'],
        ['biz-b', 'subaccount'],
        ['biz-c', 'own'],
      ],
    );
    assert.ok(!list.text.includes(own.auth_token));
    const nobody = await admin('GET', '/api/admin/businesses/nobody/twilio-account');
    assert.deepEqual([nobody.json.kind, nobody.json.account_sid], ['main', stack.emulator.accountSid]);
    // At rest: only the sealed value, in which the token does not appear.
    const store = new SqliteAccountStore(`${stack.dataDir}/recgate.db`);
    try {
      const row = await store.get('biz-c');
      assert.match(row!.sealedCredentials!, /^rs1\./);
      assert.ok(!row!.sealedCredentials!.includes(own.auth_token));
    } finally {
      await store.close();
    }
  });

  it('refuses bad mappings with a clear error naming the field, and never echoes a secret', async () => {
    const cases: Array<[unknown, string]> = [
      [{ kind: 'nope' }, 'kind'],
      [{ kind: 'subaccount', account_sid: 'ACbad' }, 'account_sid'],
      [{ kind: 'subaccount', account_sid: stack.emulator.accountSid }, 'the main account'],
      [{ kind: 'subaccount', account_sid: subA.account_sid, auth_token: 'leak-me' }, 'auth_token'],
      [{ kind: 'own', account_sid: own.account_sid }, 'auth_token'],
      [{ kind: 'own', account_sid: own.account_sid, api_key: 'SKshort', api_secret: 'leak-me' }, 'api_key'],
      [{ kind: 'main', extra: 1 }, 'extra'],
      [[], 'body'],
    ];
    for (const [body, field] of cases) {
      const res = await admin('PUT', '/api/admin/businesses/biz-x/twilio-account', body);
      assert.equal(res.status, 400, res.text);
      assert.equal((res.json.error as { code: string }).code, 'RECGATE_INVALID_REQUEST');
      assert.ok(res.text.includes(field), `${res.text} names ${field}`);
      assert.ok(!res.text.includes('leak-me'));
    }
    const badId = await admin('GET', '/api/admin/businesses/-bad/twilio-account');
    assert.equal(badId.status, 400);
    assert.equal((await admin('GET', '/api/admin/businesses/biz-x/twilio-account')).json.kind, 'main');
  });

  it("serves A's subaccount recording to A only; B is never served it nor reads it through its account", async () => {
    const parent = callSid();
    const child = callSid();
    // A <Dial>: the recording lives on the parent, in A's subaccount; only the child is registered.
    const rec = await stack.emulator.createRecording({
      account_sid: subA.account_sid,
      call_sid: child,
      parent_call_sid: parent,
      bytes: 6_000,
    });
    await stack.register({ businessId: 'biz-a', callSid: child, parentCallSid: parent });
    // B's own call names the same (unregistered) parent, and another claims A's recording SID outright.
    const bChild = callSid();
    const bClaim = callSid();
    await stack.register({ businessId: 'biz-b', callSid: bChild, parentCallSid: parent });
    await stack.register({ businessId: 'biz-b', callSid: bClaim, recordingSid: rec.recording_sid as never });
    const sid = rec.recording_sid!;

    // Before anything is cached, then after A played it: B gets 404, and is never served a byte of it.
    assert.equal((await play(bChild, 'biz-b')).status, 404);
    assert.equal((await play(child, 'biz-b')).status, 404);
    assert.equal(stack.emulator.stats().media_requests[sid], undefined, 'no media request for B');
    const a = await play(child, 'biz-a');
    assert.equal(a.status, 200);
    assert.equal(sha256(a.bytes), rec.sha256);
    for (const call of [bChild, child, bClaim]) {
      const b = await play(call, 'biz-b');
      assert.equal(b.status, 404, call);
      assert.ok(!b.bytes.includes(a.bytes.subarray(1000, 1100)));
    }
    const stats = stack.emulator.stats();
    // A's recording was read once, in A's path; B's claim asked in B's path and Twilio refused it.
    assert.deepEqual(stats.media_requests_by_account[subA.account_sid], { [sid]: 1 });
    assert.equal(stats.media_requests_by_account[stack.emulator.accountSid]?.[sid], undefined);
    assert.ok((stats.media_requests_by_account[subB.account_sid]?.[sid] ?? 0) >= 1);
    assert.equal(stats.media_requests_by_credential[subB.account_sid], undefined);
  });

  it("reads a business's own account with its own credentials", async () => {
    const rec = await stack.emulator.createRecording({ account_sid: own.account_sid, bytes: 3_000 });
    await stack.register({ businessId: 'biz-c', callSid: rec.call_sid as CallSid });
    // A HEAD before anything is cached asks the own account's HEAD, and downloads nothing.
    const head = await request(`${stack.url}/api/calls/${rec.call_sid}/download`, {
      method: 'HEAD',
      headers: { authorization: `Bearer ${await stack.token('biz-c')}` },
    });
    await head.body.dump();
    assert.deepEqual([head.statusCode, head.headers['content-length']], [200, String(rec.size)]);
    assert.equal(stack.emulator.stats().head_requests[rec.recording_sid!], 1);
    const c = await play(rec.call_sid!, 'biz-c');
    assert.equal(c.status, 200);
    assert.equal(sha256(c.bytes), rec.sha256);
    const stats = stack.emulator.stats();
    assert.deepEqual(stats.media_requests_by_credential[own.account_sid], { [rec.recording_sid!]: 1 });
    // The same call registered nowhere else: the main account cannot even see it.
    assert.equal(
      stats.media_requests_by_credential[stack.emulator.accountSid]?.[rec.recording_sid!],
      undefined,
    );
  });

  it("checks webhooks with the token of the AccountSid's account, and keeps them to that account's calls", async () => {
    const rec = await stack.emulator.createRecording({
      account_sid: subA.account_sid,
      bytes: 3_000,
    });
    const call = rec.call_sid as CallSid;
    await stack.register({ businessId: 'biz-a', callSid: call });
    const report = {
      AccountSid: subA.account_sid,
      CallSid: call,
      RecordingSid: rec.recording_sid!,
      RecordingStatus: 'completed',
      RecordingDuration: '3',
    };
    // Signed with the main token, or B's, while naming A: a bad signature.
    assert.equal(await webhook(report, stack.emulator.authToken), 403);
    assert.equal(await webhook(report, subB.auth_token), 403);
    // An account no business is mapped to, correctly signed: refused too.
    const stray = await stack.emulator.createAccount({});
    assert.equal(await webhook({ ...report, AccountSid: stray.account_sid }, stray.auth_token), 403);
    assert.equal(await webhook({ ...report, AccountSid: 'ACnope' }, stray.auth_token), 403);
    // B's account, correctly signed, about A's call: forbidden; nothing is stored.
    assert.equal(await webhook({ ...report, AccountSid: subB.account_sid }, subB.auth_token), 403);
    assert.equal((await stack.gateway.callLog.get(call))?.recordingSid, null);
    // A's own token (read from Twilio with the main credentials): accepted.
    assert.equal(await webhook(report, subA.auth_token), 204);
    assert.equal((await stack.gateway.callLog.get(call))?.recordingSid, rec.recording_sid);
    // The webhook queued its prefetch, which reads the recording from A's subaccount.
    for (
      let i = 0;
      i < 200 && !stack.emulator.stats().media_requests_by_account[subA.account_sid]?.[rec.recording_sid!];
      i++
    ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(stack.emulator.stats().media_requests_by_account[subA.account_sid]?.[rec.recording_sid!], 1);
    // An own account's webhooks use its own token.
    const ownRec = await stack.emulator.createRecording({ account_sid: own.account_sid, bytes: 3_000 });
    await stack.register({ businessId: 'biz-c', callSid: ownRec.call_sid as CallSid });
    const ownReport = {
      ...report,
      AccountSid: own.account_sid,
      CallSid: ownRec.call_sid!,
      RecordingSid: ownRec.recording_sid!,
    };
    assert.equal(await webhook(ownReport, stack.emulator.authToken), 403);
    assert.equal(await webhook(ownReport, own.auth_token), 204);
    // The stray account, refused above, mapped through the admin API: its webhooks are accepted at once,
    // not after the refusal has been remembered for a token's lifetime.
    const strayRec = await stack.emulator.createRecording({ account_sid: stray.account_sid, bytes: 3_000 });
    const mapped = await admin('PUT', '/api/admin/businesses/biz-s/twilio-account', {
      kind: 'subaccount',
      account_sid: stray.account_sid,
    });
    assert.equal(mapped.status, 201, mapped.text);
    await stack.register({ businessId: 'biz-s', callSid: strayRec.call_sid as CallSid });
    const strayReport = {
      ...report,
      AccountSid: stray.account_sid,
      CallSid: strayRec.call_sid!,
      RecordingSid: strayRec.recording_sid!,
    };
    assert.equal(await webhook(strayReport, stray.auth_token), 204);
    // Unmapped again: refused at once.
    assert.equal((await admin('DELETE', '/api/admin/businesses/biz-s/twilio-account')).status, 200);
    assert.equal(await webhook(strayReport, stray.auth_token), 403);
  });

  it("an own account's 429 opens only its breaker: its business fails fast, without asking Twilio; others play", async () => {
    const throttled = await stack.emulator.createAccount({
      parent_account_sid: null,
      auth_token: 'throttled',
    });
    const mapped = await admin('PUT', '/api/admin/businesses/biz-t/twilio-account', {
      kind: 'own',
      account_sid: throttled.account_sid,
      auth_token: throttled.auth_token,
    });
    assert.equal(mapped.status, 201, mapped.text);
    const recording = async (account: string | undefined, business: string) => {
      const rec = await stack.emulator.createRecording({
        ...(account === undefined ? {} : { account_sid: account }),
        bytes: 3_000,
      });
      // The recording SID known: no lookup at Twilio before the download.
      await stack.register({
        businessId: business,
        callSid: rec.call_sid as CallSid,
        recordingSid: rec.recording_sid as RecordingSid,
      });
      return rec;
    };
    const get = async (call: string, business: string, method: 'GET' | 'HEAD' = 'GET') => {
      const res = await request(`${stack.url}/api/calls/${call}/download`, {
        method,
        headers: { authorization: `Bearer ${await stack.token(business)}` },
      });
      const text = await res.body.text();
      return { status: res.statusCode, retryAfter: res.headers['retry-after'], text };
    };
    const metric = (sample: string) => metricOf(stack, sample);
    /** The seconds left of the 30 s window: counting down, however slow the machine is meanwhile. */
    const assertSecondsLeft = (value: unknown) => {
      const seconds = Number(value);
      assert.ok(Number.isInteger(seconds) && seconds >= 1 && seconds <= 30, `Retry-After ${String(value)}`);
    };
    const limited = await recording(throttled.account_sid, 'biz-t');
    const next = await recording(throttled.account_sid, 'biz-t');
    const onMain = await recording(undefined, 'biz-m');
    const onOwn = await recording(own.account_sid, 'biz-c');
    const trips = await metric('recgate_upstream_breaker_trips_total{scope="own"}');

    stack.emulator.addFault({ recording_sid: limited.recording_sid!, kind: 'rate_limit', retry_after: 30 });
    const first = await get(limited.call_sid!, 'biz-t');
    assert.equal(first.status, 503, first.text);
    assert.equal(JSON.parse(first.text).error.code, 'RECGATE_UPSTREAM_THROTTLED');
    assert.match(String(first.retryAfter), /^(29|30)$/);
    assert.equal(stack.emulator.stats().media_requests[limited.recording_sid!], 1);
    assert.equal(await metric('recgate_upstream_breaker_open{scope="own"}'), 1);
    assert.equal(await metric('recgate_upstream_breaker_open{scope="main"}'), 0);
    assert.equal(await metric('recgate_upstream_breaker_trips_total{scope="own"}'), trips + 1);

    // During the window: the throttled business's cold GET and HEAD fail fast, and nothing reaches Twilio.
    const before = {
      upstream: await metric('recgate_upstream_requests_total'),
      refused: await metric('recgate_upstream_rejections_total{reason="throttled"}'),
      emulator: stack.emulator.stats(),
    };
    const cold = await get(next.call_sid!, 'biz-t');
    assert.equal(cold.status, 503, cold.text);
    assert.equal(JSON.parse(cold.text).error.code, 'RECGATE_UPSTREAM_THROTTLED');
    assertSecondsLeft(cold.retryAfter);
    const head = await get(next.call_sid!, 'biz-t', 'HEAD');
    assert.equal(head.status, 503);
    assertSecondsLeft(head.retryAfter);
    assert.equal(await metric('recgate_upstream_requests_total'), before.upstream, 'no upstream request');
    const during = stack.emulator.stats();
    assert.equal(during.total_media_requests, before.emulator.total_media_requests);
    assert.equal(during.total_head_requests, before.emulator.total_head_requests);
    assert.equal(
      during.media_requests_by_credential[throttled.account_sid]?.[next.recording_sid!],
      undefined,
    );
    // Refused by the gate, before the rate limit and the queue.
    assert.equal(await metric('recgate_upstream_rejections_total{reason="throttled"}'), before.refused + 1);

    // A business on the main account, and one on another own account, still download.
    for (const [rec, business] of [
      [onMain, 'biz-m'],
      [onOwn, 'biz-c'],
    ] as const) {
      const played = await play(rec.call_sid!, business);
      assert.equal(played.status, 200, business);
      assert.equal(sha256(played.bytes), rec.sha256);
    }
    assert.equal(await metric('recgate_upstream_breaker_open{scope="main"}'), 0);
  });

  it("a mapping changed through the admin API applies to the business's next lookup", async () => {
    const parent = callSid();
    const child = callSid();
    const rec = await stack.emulator.createRecording({
      call_sid: child,
      parent_call_sid: parent,
      bytes: 3_000,
    });
    await stack.register({ businessId: 'biz-d', callSid: child, parentCallSid: parent });
    await stack.register({ businessId: 'biz-d', callSid: parent });
    const moved = await admin('PUT', '/api/admin/businesses/biz-d/twilio-account', {
      kind: 'subaccount',
      account_sid: subB.account_sid,
    });
    assert.equal(moved.status, 201);
    // The recording is in the main account, which no longer serves biz-d.
    assert.equal((await play(child, 'biz-d')).status, 404);
    const back = await admin('DELETE', '/api/admin/businesses/biz-d/twilio-account');
    assert.deepEqual([back.status, back.json.removed, back.json.kind], [200, true, 'main']);
    const played = await play(parent, 'biz-d');
    assert.equal(played.status, 200);
    assert.equal(sha256(played.bytes), rec.sha256);
  });

  it('wrote no secret to any log line of the run, debug included (runs last)', () => {
    const text = JSON.stringify(logs.records);
    assert.ok(logs.records.length > 0);
    for (const secret of [KEY, own.auth_token, subA.auth_token, subB.auth_token, 'leak-me']) {
      assert.ok(!text.includes(secret), 'a secret reached the logs');
    }
  });
});
