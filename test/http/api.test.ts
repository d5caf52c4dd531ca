import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignJWT, UnsecuredJWT } from 'jose';
import { getExpectedTwilioSignature } from 'twilio/lib/webhooks/webhooks.js';
import { request } from 'undici';
import { loadConfig } from '../../src/config/config.js';
import type { CallSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { ADMIN_TOKEN, JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

const sid = (c: string) => `CA${c.repeat(32)}` as CallSid;

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body.toString()) };
}

function assertError(res: { status: number; body: Buffer }, status: number, code: string) {
  assert.equal(res.status, status, res.body.toString());
  const body = JSON.parse(res.body.toString());
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, 'string');
  assert.doesNotMatch(res.body.toString(), /at .*\.(ts|js):\d+/, 'no stack trace');
}

describe('gateway HTTP API', () => {
  let stack: Stack;
  let acme: string;
  let globex: string;
  let own: { call_sid: string; recording_sid: string | null; size: number; sha256: string | null };
  let dial: { call_sid: string; parent_call_sid: string | null; sha256: string | null };
  let foreign: { call_sid: string };

  before(async () => {
    stack = await startStack();
    acme = await stack.token('acme');
    globex = await stack.token('globex');
    own = await stack.emulator.createRecording({ bytes: 200_000 });
    dial = await stack.emulator.createRecording({ parent_call_sid: sid('1'), bytes: 50_000 });
    foreign = await stack.emulator.createRecording({ bytes: 10_000 });
    const started = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();
    await stack.register({ businessId: 'acme', callSid: own.call_sid as CallSid, startedAt: started(1) });
    await stack.register({ businessId: 'acme', callSid: sid('1'), startedAt: started(2) });
    await stack.register({
      businessId: 'acme',
      callSid: dial.call_sid as CallSid,
      parentCallSid: sid('1'),
      startedAt: started(3),
    });
    await stack.register({
      businessId: 'globex',
      callSid: foreign.call_sid as CallSid,
      startedAt: started(4),
    });
  });
  after(() => stack?.close());

  const dl = (call: string) => `${stack.url}/api/calls/${call}/download`;

  it('serves a recording in full, byte-identical, then from cache', async () => {
    const res = await get(dl(own.call_sid), { authorization: `Bearer ${acme}` });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'audio/mpeg');
    assert.equal(sha256(res.body), own.sha256);
    assert.match(String(res.headers.etag), /^"/);
    assert.ok(res.headers['last-modified']);
    assert.match(String(res.headers['cache-control']), /private/);
    assert.match(String(res.headers['content-disposition']), /^inline/);
    const again = await get(dl(own.call_sid), { authorization: `Bearer ${acme}` });
    assert.equal(sha256(again.body), own.sha256);
    assert.equal(stack.emulator.stats().media_requests[own.recording_sid!], 1);
  });

  it('serves ranges, HEAD, 304 and 416', async () => {
    const auth = { authorization: `Bearer ${acme}` };
    const full = (await get(dl(own.call_sid), auth)).body;
    const r = await get(dl(own.call_sid), { ...auth, range: 'bytes=100-199' });
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-range'], `bytes 100-199/${own.size}`);
    assert.deepEqual(r.body, full.subarray(100, 200));
    const suffix = await get(dl(own.call_sid), { ...auth, range: 'bytes=-10' });
    assert.deepEqual(suffix.body, full.subarray(full.length - 10));
    const head = await get(dl(own.call_sid), auth, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(own.size));
    assert.equal(head.body.length, 0);
    const etag = String(head.headers.etag);
    const notModified = await get(dl(own.call_sid), { ...auth, 'if-none-match': etag });
    assert.equal(notModified.status, 304);
    const unsatisfiable = await get(dl(own.call_sid), { ...auth, range: `bytes=${own.size}-` });
    assert.equal(unsatisfiable.status, 416);
    assert.equal(unsatisfiable.headers['content-range'], `bytes */${own.size}`);
    const attachment = await get(`${dl(own.call_sid)}?download=1`, auth, 'HEAD');
    assert.match(
      String(attachment.headers['content-disposition']),
      /^attachment; filename="CA[0-9a-f]{32}\.mp3"/,
    );
  });

  it('answers a warm play in its own turn, from what is remembered, with the same answers', async () => {
    const auth = { authorization: `Bearer ${acme}` };
    const full = (await get(dl(own.call_sid), auth)).body;
    // What waits on a promise: counted while the warm plays run.
    const waited: string[] = [];
    const spy = <O extends object>(target: O, name: keyof O & string) => {
      const original = target[name] as (...args: unknown[]) => unknown;
      target[name] = ((...args: unknown[]) => {
        waited.push(name);
        return original.apply(target, args);
      }) as O[typeof name];
      return () => {
        delete target[name];
      };
    };
    const restore = [
      spy(stack.gateway.callLog, 'getForBusiness'),
      spy(stack.gateway.cache, 'open'),
      spy(stack.gateway.cache, 'state'),
    ];
    const started = performance.now();
    try {
      const range = await get(dl(own.call_sid), { ...auth, range: 'bytes=1000-1999' });
      assert.equal(range.status, 206);
      assert.deepEqual(range.body, full.subarray(1000, 2000));
      const head = await get(dl(own.call_sid), auth, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-length'], String(own.size));
      const whole = await get(dl(own.call_sid), auth);
      assert.deepEqual(whole.body, full);
      const notModified = await get(dl(own.call_sid), {
        ...auth,
        'if-none-match': String(head.headers.etag),
      });
      assert.equal(notModified.status, 304);
      assertError(await get(dl(foreign.call_sid), auth), 404, 'RECGATE_NOT_FOUND');
    } finally {
      for (const undo of restore) undo();
    }
    // The kept descriptor is trusted for a second after its last look; a machine this slow looked again.
    if (performance.now() - started < 900) assert.deepEqual(waited, [], 'nothing waited on');
  });

  it("plays a <Dial> child's recording from its parent's file, never copying it", async () => {
    const res = await get(dl(dial.call_sid), { authorization: `Bearer ${acme}` });
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), dial.sha256);
    // The client may have its last byte a moment before the download is flushed and renamed.
    let files: string[] = [];
    for (let i = 0; i < 100 && !files.includes(`${sid('1')}.mp3`); i++) {
      files = await readdir(path.join(stack.dataDir, 'recordings'));
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(files.includes(`${sid('1')}.mp3`));
    assert.ok(!files.includes(`${dial.call_sid}.mp3`));
    const parent = await get(dl(sid('1')), { authorization: `Bearer ${acme}` });
    assert.equal(sha256(parent.body), dial.sha256);
  });

  it('rejects malformed call SIDs with 400 before anything else', async () => {
    const bad = [
      '..%2F..%2Fetc%2Fpasswd',
      `CA${'a'.repeat(31)}`,
      `CA${'a'.repeat(33)}`,
      `CA${'A'.repeat(32)}`,
      `ca${'a'.repeat(32)}`,
      `CA${'a'.repeat(30)}%2F`,
      `CA${'a'.repeat(31)}%00`,
      `%D0%A1A${'a'.repeat(32)}`, // Cyrillic С
      `CA${'a'.repeat(31)}%EF%BC%91`, // fullwidth 1
      `CA${'a'.repeat(31)}g`,
    ];
    for (const s of bad) {
      const res = await get(`${stack.url}/api/calls/${s}/download`, { authorization: `Bearer ${acme}` });
      assertError(res, 400, 'RECGATE_INVALID_CALL_SID');
    }
    // Dot segments are resolved before routing, so these reach no route at all.
    for (const p of ['../../etc/passwd', '%2e%2e/download', `${'a'}/../../../etc/passwd/download`]) {
      const traversal = await get(`${stack.url}/api/calls/${p}`, { authorization: `Bearer ${acme}` });
      assert.ok([400, 404].includes(traversal.status), p);
      assert.match(traversal.json().error.code, /^RECGATE_(INVALID_CALL_SID|ROUTE_NOT_FOUND)$/);
    }
    const badEncoding = await get(`${stack.url}/api/calls/%E0%A4%A/download`);
    assertError(badEncoding, 400, 'RECGATE_INVALID_REQUEST');
  });

  it('rejects missing, malformed, forged, expired and alg:none tokens with 401', async () => {
    const key = new TextEncoder().encode(JWT_SECRET);
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now - 3600)
      .sign(key);
    const none = new UnsecuredJWT({ business_id: 'acme' }).setExpirationTime(now + 60).encode();
    const forged = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now + 60)
      .sign(new TextEncoder().encode('z'.repeat(40)));
    const cases: Record<string, string>[] = [
      {},
      { authorization: 'Bearer' },
      { authorization: 'Basic YTpi' },
      { authorization: `Bearer ${expired}` },
      { authorization: `Bearer ${none}` },
      { authorization: `Bearer ${forged}` },
      { authorization: 'Bearer not.a.jwt' },
    ];
    for (const headers of cases) {
      assertError(await get(dl(own.call_sid), headers), 401, 'RECGATE_UNAUTHENTICATED');
      assertError(await get(`${stack.url}/api/calls`, headers), 401, 'RECGATE_UNAUTHENTICATED');
    }
  });

  it("answers another business's call exactly like a missing one", async () => {
    const theirs = await get(dl(foreign.call_sid), { authorization: `Bearer ${acme}` });
    const missing = await get(dl(sid('9')), { authorization: `Bearer ${acme}` });
    assertError(theirs, 404, 'RECGATE_NOT_FOUND');
    assert.deepEqual(theirs.body, missing.body);
    const theirsUrl = await request(`${stack.url}/api/calls/${foreign.call_sid}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${acme}` },
    });
    assert.equal(theirsUrl.statusCode, 404);
    await theirsUrl.body.dump();
    const list = (await get(`${stack.url}/api/calls`, { authorization: `Bearer ${globex}` })).json();
    assert.deepEqual(
      list.calls.map((c: { call_sid: string }) => c.call_sid),
      [foreign.call_sid],
    );
    // The foreign call was never fetched for acme.
    assert.equal(
      stack.emulator.stats().media_requests[String((foreign as { recording_sid?: string }).recording_sid)] ??
        0,
      0,
    );
  });

  it('issues playback URLs that work without headers and only as signed', async () => {
    const res = await request(`${stack.url}/api/calls/${own.call_sid}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${acme}` },
    });
    assert.equal(res.statusCode, 200);
    const { url, expires_at } = (await res.body.json()) as { url: string; expires_at: string };
    assert.ok(Date.parse(expires_at) > Date.now());
    const ok = await get(url, { range: 'bytes=0-9' });
    assert.equal(ok.status, 206);
    const u = new URL(url);
    u.searchParams.set('bid', 'globex');
    assertError(await get(u.toString()), 401, 'RECGATE_UNAUTHENTICATED');
    const other = new URL(url.replace(own.call_sid, dial.call_sid));
    assertError(await get(other.toString()), 401, 'RECGATE_UNAUTHENTICATED');
  });

  it('lists calls newest first with a cursor', async () => {
    const first = (await get(`${stack.url}/api/calls?limit=2`, { authorization: `Bearer ${acme}` })).json();
    assert.equal(first.calls.length, 2);
    assert.equal(first.calls[0].call_sid, dial.call_sid);
    assert.equal(first.calls[0].parent_call_sid, sid('1'));
    assert.ok(first.next_cursor);
    const second = (
      await get(`${stack.url}/api/calls?limit=2&cursor=${encodeURIComponent(first.next_cursor)}`, {
        authorization: `Bearer ${acme}`,
      })
    ).json();
    assert.deepEqual(
      second.calls.map((c: { call_sid: string }) => c.call_sid),
      [own.call_sid],
    );
    assert.equal(second.next_cursor, null);
    for (const q of ['limit=0', 'limit=201', 'limit=abc', 'cursor=%%%', 'cursor=bm9wZQ']) {
      const res = await get(`${stack.url}/api/calls?${q}`, { authorization: `Bearer ${acme}` });
      assert.equal(res.status, 400, q);
    }
    const one = (
      await get(`${stack.url}/api/calls/${own.call_sid}`, { authorization: `Bearer ${acme}` })
    ).json();
    assert.equal(one.recording.cache.state, 'cached');
    assert.equal(one.recording.cache.size, own.size);
  });

  it('admin API registers and updates calls, guarded by the admin token', async () => {
    const put = (call: string, body: unknown, token = ADMIN_TOKEN) =>
      request(`${stack.url}/api/admin/calls/${call}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const created = await put(sid('7'), { business_id: 'acme', parent_call_sid: sid('1') });
    assert.equal(created.statusCode, 201);
    await created.body.dump();
    const updated = await put(sid('7'), { business_id: 'acme', from: '+15550001' });
    assert.equal(updated.statusCode, 200);
    const body = (await updated.body.json()) as { parent_call_sid: string; from: string };
    assert.equal(body.parent_call_sid, sid('1'));
    assert.equal(body.from, '+15550001');
    const wrong = await put(sid('7'), { business_id: 'acme' }, 'nope');
    assert.equal(wrong.statusCode, 401);
    await wrong.body.dump();
    const stolen = await put(sid('7'), { business_id: 'globex' });
    assert.equal(stolen.statusCode, 403);
    await stolen.body.dump();
    // A child may not name another business's call as its parent: it would play that call's recording.
    const crossParent = await put(sid('8'), { business_id: 'globex', parent_call_sid: sid('1') });
    assert.equal(crossParent.statusCode, 403);
    const crossBody = (await crossParent.body.json()) as { error: { code: string; message: string } };
    assert.equal(crossBody.error.code, 'RECGATE_FORBIDDEN');
    assert.match(crossBody.error.message, /parent_call_sid .*another business/);
    assert.equal(await stack.gateway.callLog.get(sid('8')), undefined, 'nothing was registered');
    const crossUpdate = await put(sid('7'), { business_id: 'acme', parent_call_sid: foreign.call_sid });
    assert.equal(crossUpdate.statusCode, 403);
    await crossUpdate.body.dump();
    assert.equal((await stack.gateway.callLog.get(sid('7')))?.parentCallSid, sid('1'), 'the link is kept');
    // A parent nobody registered is allowed: it is in the same Twilio account.
    const unregistered = await put(sid('8'), { business_id: 'globex', parent_call_sid: sid('6') });
    assert.equal(unregistered.statusCode, 201);
    await unregistered.body.dump();
    for (const bad of [
      {},
      { business_id: 'acme', parent_call_sid: 'CA1' },
      { business_id: 'acme', extra: 1 },
    ]) {
      const res = await put(sid('7'), bad);
      assert.equal(res.statusCode, 400);
      const err = (await res.body.json()) as { error: { code: string } };
      assert.equal(err.error.code, 'RECGATE_INVALID_REQUEST');
    }
    const notJson = await request(`${stack.url}/api/admin/calls/${sid('7')}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/xml' },
      body: '<call/>',
    });
    assert.equal(notJson.statusCode, 415);
    await notJson.body.dump();
    const badJson = await request(`${stack.url}/api/admin/calls/${sid('7')}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: '{"business_id":',
    });
    assert.equal(badJson.statusCode, 400);
    await badJson.body.dump();
  });

  it('accepts signed recording-status webhooks and rejects unsigned ones', async () => {
    const rec = await stack.emulator.createRecording({ bytes: 5_000 });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    const params = {
      CallSid: rec.call_sid,
      RecordingSid: rec.recording_sid!,
      RecordingStatus: 'completed',
      RecordingDuration: '1',
    };
    const url = `${stack.url}/webhooks/twilio/recording-status`;
    const signature = getExpectedTwilioSignature(stack.emulator.authToken, url, params);
    const post = (sig: string | undefined) =>
      request(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...(sig ? { 'x-twilio-signature': sig } : {}),
        },
        body: new URLSearchParams(params).toString(),
      });
    const bad = await post('AAAA');
    assert.equal(bad.statusCode, 403);
    await bad.body.dump();
    const missing = await post(undefined);
    assert.equal(missing.statusCode, 403);
    await missing.body.dump();
    const ok = await post(signature);
    assert.equal(ok.statusCode, 204);
    await ok.body.dump();
    const call = await stack.gateway.callLog.get(rec.call_sid as CallSid);
    assert.equal(call?.recordingState, 'available');
    assert.equal(call?.recordingSid, rec.recording_sid);
  });

  it('reports processing, deleted and absent recordings with their codes', async () => {
    const processing = await stack.emulator.createRecording({ status: 'processing', ready_after_ms: 60_000 });
    const deleted = await stack.emulator.createRecording({ status: 'deleted' });
    const absent = await stack.emulator.createRecording({ status: 'absent' });
    for (const r of [processing, deleted, absent]) {
      await stack.register({ businessId: 'acme', callSid: r.call_sid as CallSid });
    }
    const auth = { authorization: `Bearer ${acme}` };
    const p = await get(dl(processing.call_sid), auth);
    assertError(p, 503, 'RECGATE_RECORDING_NOT_READY');
    assert.ok(p.headers['retry-after']);
    assertError(await get(dl(absent.call_sid), auth), 404, 'RECGATE_NOT_FOUND');
    // A deleted recording is not listed by Twilio; registered explicitly, its download reports it gone.
    await stack.register({
      businessId: 'acme',
      callSid: deleted.call_sid as CallSid,
      recordingSid: deleted.recording_sid as never,
    });
    assertError(await get(dl(deleted.call_sid), auth), 404, 'RECGATE_RECORDING_GONE');
    // The failed download told the resolution state: the call is marked, and the next play says so at once.
    assert.equal((await stack.gateway.callLog.get(deleted.call_sid as CallSid))?.recordingState, 'deleted');
    assertError(await get(dl(deleted.call_sid), auth), 404, 'RECGATE_RECORDING_GONE');
  });

  it('marks a recording deleted at Twilio from a peaks request too', async () => {
    const deleted = await stack.emulator.createRecording({ status: 'deleted' });
    await stack.register({
      businessId: 'acme',
      callSid: deleted.call_sid as CallSid,
      recordingSid: deleted.recording_sid as never,
    });
    const peaks = await get(`${stack.url}/api/calls/${deleted.call_sid}/peaks`, {
      authorization: `Bearer ${acme}`,
    });
    assertError(peaks, 404, 'RECGATE_RECORDING_GONE');
    assert.equal((await stack.gateway.callLog.get(deleted.call_sid as CallSid))?.recordingState, 'deleted');
  });

  it('turns a dead upstream into 502 and stays up', async () => {
    const rec = await stack.emulator.createRecording({ bytes: 5_000 });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    await request(`${stack.emulator.url}/__emulator/faults`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'http_500', count: 1000 }),
    }).then((r) => r.body.dump());
    try {
      const res = await get(dl(rec.call_sid), { authorization: `Bearer ${acme}` });
      assert.ok([502, 504].includes(res.status), String(res.status));
      assert.match(res.json().error.code, /^RECGATE_UPSTREAM_/);
    } finally {
      stack.emulator.reset();
    }
    const health = await get(`${stack.url}/healthz`);
    assert.equal(health.status, 200);
  });

  it('aborts a streaming response when the download fails midway, never ending it short', async () => {
    const rec = await stack.emulator.createRecording({ bytes: 400_000 });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    // Every attempt (the first and each resume) breaks off mid-body.
    stack.emulator.addFault({ recording_sid: rec.recording_sid!, kind: 'reset_mid_body', count: 50 });
    try {
      const res = await request(dl(rec.call_sid), { headers: { authorization: `Bearer ${acme}` } });
      let received = 0;
      await assert.rejects(async () => {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
      });
      assert.ok(received < rec.size, `received ${received} of ${rec.size}`);
    } finally {
      stack.emulator.reset();
    }
    const files = await readdir(path.join(stack.dataDir, 'recordings'));
    assert.ok(!files.includes(`${rec.call_sid}.mp3`), 'no final file for a failed download');
    // The next play starts a fresh download and succeeds.
    const again = await get(dl(rec.call_sid), { authorization: `Bearer ${acme}` });
    assert.equal(again.status, 200);
    assert.equal(sha256(again.body), rec.sha256);
  });

  it('serves health, readiness and metrics', async () => {
    assert.equal((await get(`${stack.url}/healthz`)).status, 200);
    const ready = await get(`${stack.url}/readyz`);
    assert.equal(ready.status, 200);
    const metrics = await get(`${stack.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body.toString(), /recgate_http_requests_total/);
    assert.match(metrics.body.toString(), /recgate_cache_events_total\{event="cache_hit"\}/);
    assertError(await get(`${stack.url}/nope`), 404, 'RECGATE_ROUTE_NOT_FOUND');
  });
});

describe('RECGATE_METRICS_TOKEN', () => {
  it('puts /metrics behind a bearer token, and leaves health and readiness open', async (t) => {
    const token = 'metrics-token-for-tests-0123456789';
    const stack = await startStack({ config: { metricsToken: token } });
    t.after(() => stack.close());
    const metrics = (authorization?: string) =>
      request(`${stack.url}/metrics`, authorization ? { headers: { authorization } } : {});
    for (const authorization of [
      undefined,
      'Bearer wrong-token',
      `Basic ${token}`,
      `Bearer ${ADMIN_TOKEN}`,
    ]) {
      const res = await metrics(authorization);
      assert.equal(res.statusCode, 401, String(authorization));
      assert.equal(
        ((await res.body.json()) as { error: { code: string } }).error.code,
        'RECGATE_UNAUTHENTICATED',
      );
    }
    const ok = await metrics(`Bearer ${token}`);
    assert.equal(ok.statusCode, 200);
    assert.match(await ok.body.text(), /recgate_http_requests_total/);
    for (const path of ['/healthz', '/readyz']) {
      const res = await request(`${stack.url}${path}`);
      await res.body.dump();
      assert.equal(res.statusCode, 200, path);
    }
    assert.throws(() => loadConfig({ jwtSecret: JWT_SECRET, metricsToken: 'short' }, {}), /at least 16/);
  });
});
