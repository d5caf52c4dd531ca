/** The one writer of recording state: what each report about a recording changes, and what it leaves alone. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CallLog } from '../../src/call-log/call-log.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { createError, isRecgateError } from '../../src/errors.js';
import { RecordingState } from '../../src/resolution/state.js';
import { newCallSid, newRecordingSid } from '../call-log/contract.js';

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const log: CallLog = new SqliteCallLog(':memory:');
  await log.migrate();
  t.after(() => log.close());
  return { log, state: new RecordingState(log) };
}

describe('recording state', () => {
  it("a completed webhook for a child's own recording replaces the parent's it was playing", async (t) => {
    const { log, state } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    await log.upsert({ businessId: 'acme', callSid: parent });
    await log.upsert({ businessId: 'acme', callSid: child, parentCallSid: parent });
    const parentRecording = newRecordingSid();
    await state.found(child, parentRecording, parent);
    const own = newRecordingSid();
    assert.equal(
      await state.statusCallback({ callSid: child, recordingSid: own, status: 'completed', durationS: 12 }),
      'stored',
    );
    const after = await log.get(child);
    assert.equal(after?.recordingSid, own);
    assert.equal(after?.recordingOwnerCallSid, child);
    assert.equal(after?.recordingDurationS, 12);
    // A second recording of the same call does not displace the first (the conversation).
    const second = newRecordingSid();
    assert.equal(
      await state.statusCallback({ callSid: child, recordingSid: second, status: 'completed', durationS: 3 }),
      'ignored',
    );
    assert.equal((await log.get(child))?.recordingSid, own);
  });

  it('a deleted webhook marks every call playing the recording; unknown calls and other statuses change nothing', async (t) => {
    const { log, state } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    await log.upsert({ businessId: 'acme', callSid: parent });
    await log.upsert({ businessId: 'acme', callSid: child, parentCallSid: parent });
    const rec = newRecordingSid();
    await state.found(parent, rec, parent);
    await state.found(child, rec, parent);
    assert.equal(
      await state.statusCallback({
        callSid: newCallSid(),
        recordingSid: rec,
        status: 'deleted',
        durationS: null,
      }),
      'ignored',
    );
    assert.equal((await log.get(parent))?.recordingState, 'available');
    assert.equal(
      await state.statusCallback({
        callSid: parent,
        recordingSid: rec,
        status: 'in-progress',
        durationS: null,
      }),
      'ignored',
    );
    assert.equal(
      await state.statusCallback({ callSid: parent, recordingSid: rec, status: 'deleted', durationS: null }),
      'deleted',
    );
    assert.equal((await log.get(parent))?.recordingState, 'deleted');
    assert.equal((await log.get(child))?.recordingState, 'deleted');
  });

  it('a download that found the recording deleted upstream marks it gone; other failures change nothing', async (t) => {
    const { log, state } = await setup(t);
    const call = newCallSid();
    await log.upsert({ businessId: 'acme', callSid: call });
    const rec = newRecordingSid();
    const ref = await state.found(call, rec, call);
    await state.downloadFailed(ref, createError('RECGATE_UPSTREAM_UNAVAILABLE'));
    await state.downloadFailed(ref, createError('RECGATE_STORAGE_FULL'));
    assert.equal((await log.get(call))?.recordingState, 'available');
    await state.downloadFailed(ref, createError('RECGATE_RECORDING_GONE'));
    assert.equal((await log.get(call))?.recordingState, 'deleted');
  });

  it("registering a new parent forgets the old parent's recording; an explicit recording stays", async (t) => {
    const { state } = await setup(t);
    const oldParent = newCallSid();
    const newParent = newCallSid();
    const child = newCallSid();
    for (const sid of [oldParent, newParent]) await state.register({ businessId: 'acme', callSid: sid });
    const created = await state.register({ businessId: 'acme', callSid: child, parentCallSid: oldParent });
    assert.equal(created.created, true);
    await state.found(child, newRecordingSid(), oldParent);
    const updated = await state.register({ businessId: 'acme', callSid: child, parentCallSid: newParent });
    assert.equal(updated.created, false);
    assert.equal(updated.call.parentCallSid, newParent);
    assert.equal(updated.call.recordingState, 'unknown', 'the next play looks the new parent up');
    assert.equal(updated.call.recordingSid, null);
    // The same parent again changes nothing; an explicit recording of the call's own survives a new parent.
    await state.found(child, newRecordingSid(), newParent);
    assert.equal(
      (await state.register({ businessId: 'acme', callSid: child, parentCallSid: newParent })).call
        .recordingState,
      'available',
    );
    const explicit = newRecordingSid();
    await state.register({ businessId: 'acme', callSid: child, recordingSid: explicit });
    const moved = await state.register({ businessId: 'acme', callSid: child, parentCallSid: oldParent });
    assert.equal(moved.call.recordingSid, explicit);
    assert.equal(moved.call.recordingState, 'available');
  });

  it('refuses a parent registered to another business', async (t) => {
    const { state } = await setup(t);
    const theirs = newCallSid();
    await state.register({ businessId: 'globex', callSid: theirs });
    await assert.rejects(
      state.register({ businessId: 'acme', callSid: newCallSid(), parentCallSid: theirs }),
      (err) => isRecgateError(err) && err.code === 'RECGATE_FORBIDDEN',
    );
  });
});
