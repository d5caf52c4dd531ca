/** The one writer of recording state: what each report about a recording changes, and what it leaves alone. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CallLog } from '../../src/call-log/call-log.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { createError, isRecgateError } from '../../src/errors.js';
import type { RecordingCache } from '../../src/recordings/cache.js';
import { RecordingState } from '../../src/resolution/state.js';
import { newCallSid, newRecordingSid } from '../call-log/contract.js';
import { captureLogs } from '../helpers/log-capture.js';

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

  it('a download that found the recording deleted removes its local copies, owner and recording named', async (t) => {
    const { log } = await setup(t);
    const removed: unknown[][] = [];
    let failRemoval = false;
    const cache = {
      remove: async (...args: Parameters<RecordingCache['remove']>) => {
        removed.push([args[0], args[1], args[2]?.onlyRecording]);
        if (failRemoval) throw createError('RECGATE_LOCK_TIMEOUT');
        return 1000;
      },
    };
    const capture = captureLogs({ plain: true });
    const state = new RecordingState(log, { cache, keep: false, logger: capture.logger });
    const parent = newCallSid();
    const child = newCallSid();
    await log.upsert({ businessId: 'acme', callSid: parent });
    await log.upsert({ businessId: 'acme', callSid: child, parentCallSid: parent });
    const rec = newRecordingSid();
    const ref = await state.found(child, rec, parent);
    await state.downloadFailed(ref, createError('RECGATE_UPSTREAM_UNAVAILABLE'));
    assert.deepEqual(removed, [], 'an outage removes nothing');
    await state.downloadFailed(
      { ...ref, variant: { channels: 1, format: 'wav' } },
      createError('RECGATE_RECORDING_GONE'),
    );
    assert.deepEqual(removed, [[parent, 'upstream_deleted', rec]], "every variant of the owner's file");
    assert.equal((await log.get(child))?.recordingState, 'deleted');

    // A removal that fails is logged, not thrown: the caller answers with the 404 it had.
    failRemoval = true;
    await state.downloadFailed(ref, createError('RECGATE_RECORDING_GONE'));
    assert.equal(removed.length, 2);
    const warning = capture.records.find((l) => l.event === 'upstream_delete_remove_failed');
    assert.equal(warning?.recordingSid, rec);
    assert.equal(warning?.callSid, parent);
  });

  it('with the keep flag, or without a cache, a recording deleted upstream is only marked', async (t) => {
    const { log } = await setup(t);
    const removed: string[] = [];
    const cache = {
      remove: async (owner: string) => {
        removed.push(owner);
        return null;
      },
    };
    const kept = new RecordingState(log, { cache, keep: true, logger: captureLogs({ plain: true }).logger });
    const call = newCallSid();
    await log.upsert({ businessId: 'acme', callSid: call });
    const ref = await kept.found(call, newRecordingSid(), call);
    await kept.downloadFailed(ref, createError('RECGATE_RECORDING_GONE'));
    await kept.removeDeletedCopies(call, ref.recordingSid);
    assert.deepEqual(removed, []);
    assert.equal((await log.get(call))?.recordingState, 'deleted');
    await new RecordingState(log).removeDeletedCopies(call, ref.recordingSid);
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
