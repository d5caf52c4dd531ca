import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import twilio from 'twilio';
import type { Emulator } from '../../src/emulator/index.js';
import { API_KEY_SECRET, API_KEY_SID, start } from './helpers.js';

describe('the twilio SDK against the emulator', () => {
  let emulator: Emulator;
  let client: twilio.Twilio;
  before(async () => {
    emulator = await start();
    client = twilio(emulator.accountSid, emulator.authToken, { autoRetry: false });
    client.api.baseUrl = emulator.url;
  });
  after(() => emulator.close());

  it('fetches a call', async () => {
    const created = await emulator.createRecording({ call_sid: `CA${'1'.repeat(32)}`, duration_s: 25 });
    const call = await client.calls(created.call_sid).fetch();
    assert.equal(call.sid, created.call_sid);
    assert.equal(call.accountSid, emulator.accountSid);
    assert.equal(call.direction, 'inbound');
    assert.equal(call.duration, '25');
    assert.ok(call.startTime instanceof Date && !Number.isNaN(call.startTime.getTime()));
    assert.equal(call.endTime.getTime() - call.startTime.getTime(), 25_000);
  });

  it('fetches a <Dial> child with its parent_call_sid', async () => {
    const created = await emulator.createRecording({ parent_call_sid: `CA${'2'.repeat(32)}`, bytes: 4000 });
    const call = await client.calls(created.call_sid).fetch();
    assert.equal(call.parentCallSid, `CA${'2'.repeat(32)}`);
    assert.equal(call.direction, 'outbound-dial');
  });

  it('lists a call’s recordings across pages', async () => {
    const first = await emulator.createRecording({ bytes: 2000 });
    for (let i = 0; i < 4; i++) await emulator.createRecording({ call_sid: first.call_sid, bytes: 2000 });
    const all = await client.calls(first.call_sid).recordings.list({ pageSize: 2 });
    assert.equal(all.length, 5);
    assert.equal(new Set(all.map((r) => r.sid)).size, 5);
    for (const recording of all) assert.equal(recording.callSid, first.call_sid);
    const filtered = await client.recordings.list({ callSid: first.call_sid, pageSize: 3 });
    assert.deepEqual(
      filtered.map((r) => r.sid),
      all.map((r) => r.sid),
    );
  });

  it('fetches a recording and deletes it', async () => {
    const created = await emulator.createRecording({ duration_s: 12 });
    const recording = await client.recordings(created.recording_sid!).fetch();
    assert.equal(recording.sid, created.recording_sid);
    assert.equal(recording.callSid, created.call_sid);
    assert.equal(recording.status, 'completed');
    assert.equal(recording.duration, '12');
    assert.equal(recording.channels, 1);
    assert.ok(recording.dateCreated instanceof Date && !Number.isNaN(recording.dateCreated.getTime()));
    assert.equal(recording.mediaUrl, created.media_url);

    assert.equal(await client.recordings(created.recording_sid!).remove(), true);
    await assert.rejects(
      client.recordings(created.recording_sid!).fetch(),
      (err: { status: number; code: number }) => {
        assert.equal(err.status, 404);
        assert.equal(err.code, 20404);
        return true;
      },
    );
  });

  it('authenticates with an API key and reports bad credentials as 20003', async () => {
    const created = await emulator.createRecording({ bytes: 2000 });
    const keyed = twilio(API_KEY_SID, API_KEY_SECRET, { accountSid: emulator.accountSid, autoRetry: false });
    keyed.api.baseUrl = emulator.url;
    assert.equal((await keyed.calls(created.call_sid).fetch()).sid, created.call_sid);

    const wrong = twilio(emulator.accountSid, 'not-the-token', { autoRetry: false });
    wrong.api.baseUrl = emulator.url;
    await assert.rejects(wrong.calls(created.call_sid).fetch(), (err: { status: number; code: number }) => {
      assert.equal(err.status, 401);
      assert.equal(err.code, 20003);
      return true;
    });
  });
});
