/**
 * The parent fallback across businesses, end to end: one Twilio account (the emulator) holds `<Dial>`
 * pairs whose legs are registered to different businesses. A business never plays, nor sees the links to
 * or the cache state of, a call registered to another business.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { CallSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

interface Call {
  call_sid: string;
  parent_call_sid: string | null;
  recording: {
    state: string;
    recording_sid: string | null;
    owner_call_sid: string | null;
    size: number | null;
    cache?: { state: string };
  };
}

describe('tenancy of the parent fallback', () => {
  let stack: Stack;
  let acme: string;
  let globex: string;

  before(async () => {
    stack = await startStack();
    acme = await stack.token('acme');
    globex = await stack.token('globex');
  });
  after(() => stack?.close());

  async function get(url: string, token: string) {
    const res = await request(`${stack.url}${url}`, { headers: { authorization: `Bearer ${token}` } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, body, json: () => JSON.parse(body.toString()) };
  }
  const download = (call: string, token: string) => get(`/api/calls/${call}/download`, token);
  const details = async (call: string, token: string): Promise<Call> => {
    const res = await get(`/api/calls/${call}`, token);
    assert.equal(res.status, 200, res.body.toString());
    return res.json();
  };
  const listed = async (call: string, token: string): Promise<Call | undefined> =>
    (await get('/api/calls?limit=200', token)).json().calls.find((c: Call) => c.call_sid === call);
  const files = () => readdir(path.join(stack.dataDir, 'recordings')).catch(() => [] as string[]);

  /** A `<Dial>` pair at the emulator: the recording sits on the parent leg. */
  async function dial() {
    const parent = newCallSid();
    const rec = await stack.emulator.createRecording({ parent_call_sid: parent, bytes: 20_000 });
    return { parent, child: rec.call_sid as CallSid, recordingSid: rec.recording_sid!, sha256: rec.sha256 };
  }

  /** Answered exactly like a call that does not exist, in status and body. */
  async function assertLikeMissing(call: string, token: string) {
    const res = await download(call, token);
    const missing = await download(newCallSid(), token);
    assert.equal(res.status, 404, res.body.toString());
    assert.equal(res.json().error.code, 'RECGATE_NOT_FOUND');
    assert.deepEqual(res.body, missing.body);
  }

  /** A call whose recording lives on another business's call shows no recording, no link and no cache. */
  function assertHidden(call: Call | undefined) {
    assert.ok(call);
    assert.equal(call.parent_call_sid, null);
    assert.deepEqual(call.recording, {
      state: 'absent',
      recording_sid: null,
      owner_call_sid: null,
      size: null,
      upstream_status: null,
      purged_at: null,
      cache: { state: 'absent' },
    });
  }

  it('does not play a parent the call log registers to another business, nor show it', async () => {
    const pair = await dial();
    await stack.register({ businessId: 'acme', callSid: pair.parent });
    // Registered straight into the call log, as rows written before the admin API refused such links.
    await stack.register({ businessId: 'globex', callSid: pair.child, parentCallSid: pair.parent });

    await assertLikeMissing(pair.child, globex);
    assertHidden(await details(pair.child, globex));
    assertHidden(await listed(pair.child, globex));
    assert.equal(stack.emulator.stats().media_requests[pair.recordingSid] ?? 0, 0, 'nothing fetched');
    // The parent's own business plays it as usual.
    const own = await download(pair.parent, acme);
    assert.equal(own.status, 200);
    assert.equal(sha256(own.body), pair.sha256);
  });

  it('does not play a parent named only by Twilio and registered to another business', async () => {
    const pair = await dial();
    await stack.register({ businessId: 'acme', callSid: pair.parent });
    await stack.register({ businessId: 'globex', callSid: pair.child });

    await assertLikeMissing(pair.child, globex);
    assert.equal(stack.emulator.stats().media_requests[pair.recordingSid] ?? 0, 0, 'nothing fetched');
  });

  it('plays a same-business parent named only by Twilio from its file, writing none for the child', async () => {
    const pair = await dial();
    await stack.register({ businessId: 'acme', callSid: pair.parent });
    await stack.register({ businessId: 'acme', callSid: pair.child });

    const res = await download(pair.child, acme);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), pair.sha256);
    const shown = await details(pair.child, acme);
    assert.equal(shown.recording.owner_call_sid, pair.parent);
    let names: string[] = [];
    for (let i = 0; i < 100 && !names.includes(`${pair.parent}.mp3`); i++) {
      names = await files();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(names.includes(`${pair.parent}.mp3`));
    assert.ok(!names.some((name) => name.includes(pair.child)), 'nothing under the child’s name');
  });

  it('stops playing and showing a parent once it is registered to another business', async () => {
    const pair = await dial();
    await stack.register({ businessId: 'globex', callSid: pair.child });
    const before = await download(pair.child, globex);
    assert.equal(before.status, 200, 'an unregistered parent is followed');
    assert.equal(sha256(before.body), pair.sha256);
    assert.equal((await details(pair.child, globex)).recording.owner_call_sid, pair.parent);

    // The parent's rightful business registers it afterwards: allowed, a child elsewhere cannot block it.
    const put = await request(`${stack.url}/api/admin/calls/${pair.parent}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme' }),
    });
    assert.equal(put.statusCode, 201);
    await put.body.dump();

    await assertLikeMissing(pair.child, globex);
    assertHidden(await details(pair.child, globex));
    assertHidden(await listed(pair.child, globex));
    assert.equal((await download(pair.parent, acme)).status, 200);
  });

  it("answers a deletion webhook for another business's recording like a missing recording, not as gone", async () => {
    const pair = await dial();
    await stack.register({ businessId: 'globex', callSid: pair.child });
    assert.equal((await download(pair.child, globex)).status, 200);
    await stack.register({ businessId: 'acme', callSid: pair.parent });

    // Twilio reports the parent's recording deleted; the deletion reaches every call that played it.
    const status = await stack.recordingStatus({
      CallSid: pair.parent,
      RecordingSid: pair.recordingSid,
      RecordingStatus: 'deleted',
    });
    assert.equal(status, 204);
    assert.equal((await stack.gateway.callLog.get(pair.child))?.recordingState, 'deleted');

    await assertLikeMissing(pair.child, globex);
    assertHidden(await details(pair.child, globex));
  });
});
