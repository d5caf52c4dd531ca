/**
 * RecordingResolver against a real (in-memory SQLite) call log and a fake upstream whose answers, and
 * whose timing, the test controls.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CallLog, CallRecord, CallUpsert } from '../../src/call-log/call-log.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { isRecgateError } from '../../src/errors.js';
import { RecordingResolver } from '../../src/resolution/resolver.js';
import { RecordingState } from '../../src/resolution/state.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { deferred, FakeCallsUpstream, newCallSid } from '../upstream/fakes.js';

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const log: CallLog = new SqliteCallLog(':memory:');
  await log.migrate();
  t.after(() => log.close());
  const upstream = new FakeCallsUpstream();
  const resolver = new RecordingResolver({ callLog: log, state: new RecordingState(log), upstream });
  const register = async (call: CallUpsert): Promise<CallRecord> => log.upsert(call);
  /** The call as the download route hands it over: re-read, as each request does. */
  const current = async (sid: CallSid): Promise<CallRecord> => {
    const call = await log.get(sid);
    assert.ok(call, `${sid} is registered`);
    return call;
  };
  return { log, upstream, resolver, register, current };
}

function isNotFound(err: unknown): boolean {
  assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
  assert.equal(err.code, 'RECGATE_NOT_FOUND');
  assert.equal(err.statusCode, 404);
  assert.equal(err.message, 'No such call, or it has no recording', 'the message of an unknown call');
  return true;
}

describe('RecordingResolver: the parent fallback stays inside the business', () => {
  it("plays a same-business parent's recording from the parent's file", async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    const rec = upstream.addRecording(parent);
    await register({ businessId: 'acme', callSid: parent });
    await register({ businessId: 'acme', callSid: child, parentCallSid: parent });

    const ref = await resolver.resolve(await current(child));
    assert.deepEqual(ref, { recordingSid: rec, ownerCallSid: parent }, 'the file is {parent}.mp3');
    const stored = await current(child);
    assert.equal(stored.recordingState, 'available');
    assert.equal(stored.recordingOwnerCallSid, parent);
    // Played again, the stored resolution answers, still naming the parent's file.
    const asked = upstream.asked.length;
    assert.deepEqual(await resolver.resolve(stored), ref);
    assert.equal(upstream.asked.length, asked, 'no upstream lookup for a stored resolution');
  });

  it('follows a parent that only Twilio names and nobody registered', async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    const rec = upstream.addRecording(parent);
    upstream.addCall(child, parent);
    await register({ businessId: 'acme', callSid: child });

    assert.deepEqual(await resolver.resolve(await current(child)), {
      recordingSid: rec,
      ownerCallSid: parent,
    });
  });

  it('never follows a parent that the call log registers to another business', async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    upstream.addRecording(parent);
    await register({ businessId: 'acme', callSid: parent });
    await register({ businessId: 'globex', callSid: child, parentCallSid: parent });

    await assert.rejects(resolver.resolve(await current(child)), isNotFound);
    assert.ok(
      !upstream.asked.includes(`listCallRecordings ${parent}`),
      "the parent's recordings are not asked",
    );
    const stored = await current(child);
    assert.equal(stored.recordingState, 'absent');
    assert.equal(stored.recordingSid, null);
    assert.equal(stored.recordingOwnerCallSid, null);
  });

  it("never follows another business's parent through its stored resolution either", async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    const rec = upstream.addRecording(parent);
    // The parent has played for its own business, so its resolution is stored.
    await register({ businessId: 'acme', callSid: parent, recordingSid: rec });
    await register({ businessId: 'globex', callSid: child, parentCallSid: parent });

    await assert.rejects(resolver.resolve(await current(child)), isNotFound);
    assert.equal((await current(child)).recordingSid, null);
  });

  it('never follows a parent named only by Twilio and registered to another business', async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    upstream.addRecording(parent);
    upstream.addCall(child, parent);
    await register({ businessId: 'acme', callSid: parent });
    await register({ businessId: 'globex', callSid: child });

    await assert.rejects(resolver.resolve(await current(child)), isNotFound);
    assert.ok(upstream.asked.includes(`getCall ${child}`), 'the parent came from Twilio');
    assert.ok(!upstream.asked.includes(`listCallRecordings ${parent}`));
    assert.equal((await current(child)).recordingState, 'absent');
  });

  it('never follows a same-business parent whose recording lives on another business’s call', async (t) => {
    const { log, upstream, resolver, register, current } = await setup(t);
    const grandparent = newCallSid();
    const parent = newCallSid();
    const child = newCallSid();
    const rec = upstream.addRecording(grandparent);
    await register({ businessId: 'globex', callSid: parent });
    await register({ businessId: 'globex', callSid: child, parentCallSid: parent });
    // The parent resolved to the grandparent's recording while nobody had registered the grandparent.
    await log.setResolution(parent, {
      recordingState: 'available',
      recordingSid: rec,
      recordingOwnerCallSid: grandparent,
    });
    await register({ businessId: 'acme', callSid: grandparent });

    await assert.rejects(resolver.resolve(await current(child)), isNotFound);
    assert.equal((await current(child)).recordingSid, null);
  });
});

describe('RecordingResolver: a stored resolution naming another call is checked again', () => {
  async function playedBeforeTheParentWasRegistered(t: Parameters<typeof setup>[0]) {
    const s = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    const rec = s.upstream.addRecording(parent);
    s.upstream.addCall(child, parent);
    await s.register({ businessId: 'globex', callSid: child });
    assert.deepEqual(await s.resolver.resolve(await s.current(child)), {
      recordingSid: rec,
      ownerCallSid: parent,
    });
    return { ...s, parent, child, rec };
  }

  it('stops serving a parent later registered to another business', async (t) => {
    const { resolver, register, current, parent, child } = await playedBeforeTheParentWasRegistered(t);
    await register({ businessId: 'acme', callSid: parent });

    const stored = await current(child);
    assert.equal(stored.recordingState, 'available', 'the stale resolution is still stored');
    await assert.rejects(resolver.resolve(stored), isNotFound);
    const parentRecord = await current(parent);
    assert.equal(parentRecord.businessId, 'acme');
  });

  it('answers a deletion of that recording like a missing one too, not as gone', async (t) => {
    const { log, resolver, register, current, parent, child, rec } =
      await playedBeforeTheParentWasRegistered(t);
    await register({ businessId: 'acme', callSid: parent });
    await log.setResolutionByRecording(rec, { recordingState: 'deleted' });

    assert.equal((await current(child)).recordingState, 'deleted');
    await assert.rejects(resolver.resolve(await current(child)), isNotFound);
  });

  it('keeps serving a parent later registered to the same business', async (t) => {
    const { resolver, register, current, parent, child, rec } = await playedBeforeTheParentWasRegistered(t);
    await register({ businessId: 'globex', callSid: parent });

    assert.deepEqual(await resolver.resolve(await current(child)), {
      recordingSid: rec,
      ownerCallSid: parent,
    });
  });

  it('costs a call that owns its recording no call-log lookup', async (t) => {
    const { log, upstream, resolver, register, current } = await setup(t);
    const own = newCallSid();
    const rec = upstream.addRecording(own);
    await register({ businessId: 'acme', callSid: own, recordingSid: rec });
    const call = await current(own);
    let lookups = 0;
    const get = log.get.bind(log);
    t.mock.method(log, 'get', (sid: CallSid) => {
      lookups++;
      return get(sid);
    });
    assert.deepEqual(await resolver.resolve(call), { recordingSid: rec, ownerCallSid: own });
    assert.equal(lookups, 0);
  });
});

describe('RecordingResolver: one lookup shared by concurrent callers', () => {
  /** A child call whose recording sits on its parent, and an upstream held at its first lookup. */
  async function heldLookup(t: Parameters<typeof setup>[0]) {
    const s = await setup(t);
    const parent = newCallSid();
    const child = newCallSid();
    const rec = s.upstream.addRecording(parent);
    s.upstream.addCall(child, parent);
    const call = await s.register({ businessId: 'acme', callSid: child });
    const gate = deferred();
    s.upstream.gate = gate.promise;
    const lookups = () => s.upstream.asked.filter((a) => a === `listCallRecordings ${child}`).length;
    return { ...s, call, child, parent, rec, open: gate.resolve, lookups };
  }

  it('lets a caller leave while the others still get the recording', async (t) => {
    const { resolver, upstream, call, parent, rec, open, lookups } = await heldLookup(t);
    const first = new AbortController();
    const second = new AbortController();
    const firstResult = resolver.resolve(call, first.signal);
    const secondResult = resolver.resolve(call, second.signal);
    await upstream.arrived.promise;

    const gone = new Error('the first client disconnected');
    first.abort(gone);
    await assert.rejects(firstResult, (err) => err === gone);
    assert.equal(upstream.signals[0]?.aborted, false, 'the shared lookup runs on');
    open();
    assert.deepEqual(await secondResult, { recordingSid: rec, ownerCallSid: parent });
    assert.equal(lookups(), 1, 'both callers shared one lookup');
  });

  it('aborts the shared lookup once every caller has left, and starts afresh for the next', async (t) => {
    const { resolver, upstream, call, parent, rec, open, lookups } = await heldLookup(t);
    const callers = [new AbortController(), new AbortController()];
    const results = callers.map((c) => resolver.resolve(call, c.signal));
    await upstream.arrived.promise;
    const shared = upstream.signals[0];
    assert.ok(shared);

    callers[0]!.abort(new Error('first left'));
    await assert.rejects(results[0]!, /first left/);
    assert.equal(shared.aborted, false, 'one caller still waits');
    callers[1]!.abort(new Error('second left'));
    await assert.rejects(results[1]!, /second left/);
    assert.equal(shared.aborted, true, 'nobody waits any more');

    open();
    assert.deepEqual(await resolver.resolve(call), { recordingSid: rec, ownerCallSid: parent });
    assert.equal(lookups(), 2, 'the next caller did not join the abandoned lookup');
  });

  it('rejects a caller whose signal has already fired without starting a lookup', async (t) => {
    const { resolver, upstream, call } = await heldLookup(t);
    const reason = new Error('already gone');
    await assert.rejects(resolver.resolve(call, AbortSignal.abort(reason)), (err) => err === reason);
    assert.deepEqual(upstream.asked, []);
  });

  it('makes a lazy signal only for a lookup: a stored resolution needs none', async (t) => {
    const { resolver, upstream, call, child, parent, rec, open, log } = await heldLookup(t);
    let made = 0;
    const controller = new AbortController();
    const lazy = () => {
      made++;
      return controller.signal;
    };
    const first = resolver.resolve(call, lazy);
    await upstream.arrived.promise;
    assert.equal(made, 1, 'the lookup waits, so it made the signal');
    open();
    assert.deepEqual(await first, { recordingSid: rec, ownerCallSid: parent });
    controller.abort(new Error('gone'));
    // Now stored: answered from the call log, the fired signal never made or looked at.
    const stored = await log.get(child);
    assert.ok(stored);
    assert.deepEqual(await resolver.resolve(stored, lazy), { recordingSid: rec, ownerCallSid: parent });
    assert.equal(made, 1);
  });
});

describe('RecordingResolver.resolveNow: the stored resolution at once, or no answer', () => {
  it("answers a call's own stored recording at once, exactly as resolve does", async (t) => {
    const { upstream, resolver, register, current } = await setup(t);
    const callSid = newCallSid();
    const rec = upstream.addRecording(callSid);
    await register({ businessId: 'acme', callSid });
    assert.equal(resolver.resolveNow(await current(callSid)), undefined, 'nothing stored yet: resolve looks');
    const ref = await resolver.resolve(await current(callSid));
    const asked = upstream.asked.length;
    const now = resolver.resolveNow(await current(callSid));
    assert.equal(now instanceof Promise, false);
    assert.deepEqual(now, ref);
    assert.deepEqual(now, { recordingSid: rec, ownerCallSid: callSid });
    assert.equal(upstream.asked.length, asked, 'no upstream lookup');
  });

  it("leaves to resolve a parent's recording, a purge, a deletion and a negative answer", async (t) => {
    const { log, upstream, resolver, register, current } = await setup(t);
    const [parent, child, lonely] = [newCallSid(), newCallSid(), newCallSid()];
    const rec = upstream.addRecording(parent);
    await register({ businessId: 'acme', callSid: parent });
    await register({ businessId: 'acme', callSid: child, parentCallSid: parent });
    await register({ businessId: 'acme', callSid: lonely });
    await resolver.resolve(await current(child));
    assert.equal((await current(child)).recordingOwnerCallSid, parent);
    assert.equal(resolver.resolveNow(await current(child)), undefined, "another call's file: checked again");
    await assert.rejects(resolver.resolve(await current(lonely)), isNotFound);
    assert.equal(
      resolver.resolveNow(await current(lonely)),
      undefined,
      'a negative answer: resolve throws it',
    );
    await resolver.resolve(await current(parent));
    assert.ok(resolver.resolveNow(await current(parent)));
    await log.markPurged(parent, rec);
    assert.equal(resolver.resolveNow(await current(parent)), undefined, 'purged: resolve throws it');
    await assert.rejects(resolver.resolve(await current(parent)), { code: 'RECGATE_RECORDING_PURGED' });
    const gone = newCallSid();
    const goneRec = upstream.addRecording(gone);
    await register({ businessId: 'acme', callSid: gone });
    await resolver.resolve(await current(gone));
    await log.setResolutionByRecording(goneRec, { recordingState: 'deleted' });
    assert.equal(resolver.resolveNow(await current(gone)), undefined, 'deleted: resolve throws it');
  });

  it("names the business's account when the directory remembers it, and waits for nothing it does not", async (t) => {
    const { log, upstream } = await setup(t);
    let remembered = false;
    const accounts = {
      upstreamFor: (businessId: string) => {
        const target = { account: `AC-${businessId}`, upstream };
        return remembered ? target : Promise.resolve(target);
      },
    };
    const resolver = new RecordingResolver({
      callLog: log,
      state: new RecordingState(log),
      upstream,
      accounts,
    });
    const callSid = newCallSid();
    const rec = upstream.addRecording(callSid);
    await log.upsert({ businessId: 'acme', callSid });
    const ref = await resolver.resolve((await log.get(callSid))!);
    assert.deepEqual(ref, { recordingSid: rec, ownerCallSid: callSid, account: 'AC-acme' });
    assert.equal(
      resolver.resolveNow((await log.get(callSid))!),
      undefined,
      'the mapping must be loaded first',
    );
    remembered = true;
    assert.deepEqual(resolver.resolveNow((await log.get(callSid))!), ref);
  });

  it('leaves a failing account load to resolve, which reports it; no rejection goes unhandled', async (t) => {
    const { log, upstream } = await setup(t);
    const failure = new Error('the accounts database is down');
    const accounts = { upstreamFor: () => Promise.reject(failure) };
    const resolver = new RecordingResolver({
      callLog: log,
      state: new RecordingState(log),
      upstream,
      accounts,
    });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    t.after(() => process.off('unhandledRejection', onUnhandled));
    const callSid = newCallSid();
    await log.upsert({ businessId: 'acme', callSid });
    await log.setResolution(callSid, {
      recordingState: 'available',
      recordingSid: `RE${'1'.repeat(32)}` as RecordingSid,
      recordingOwnerCallSid: callSid,
    });
    const call = (await log.get(callSid))!;
    assert.equal(resolver.resolveNow(call), undefined);
    await assert.rejects(resolver.resolve(call), failure);
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(unhandled, []);
  });
});
