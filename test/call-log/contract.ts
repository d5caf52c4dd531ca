/**
 * The contract every CallLog backend must pass (like undici's cacheStoreTests). A backend's test file calls
 * {@link callLogContract} with a factory that opens a fresh, empty, not yet migrated call log; the suite
 * migrates it itself, because migration is part of the contract.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, type TestContext, test } from 'node:test';
import fc from 'fast-check';
import {
  type CallLog,
  type CallRecord,
  type CallUpsert,
  MAX_BUSINESSES_OF,
} from '../../src/call-log/call-log.js';
import { POSTGRES_MIGRATIONS } from '../../src/call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/call-log/migrations/sqlite-migrations.js';
import { ERRORS, type ErrorCode, isRecgateError } from '../../src/errors.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';

export interface CallLogSubject {
  /** A fresh call log on an empty database, not migrated yet. */
  log: CallLog;
  /** Opens another instance on the same database, as a second worker process would. */
  makeSecond?: () => Promise<CallLog>;
  /** Removes the database; called after every instance is closed. */
  cleanup: () => Promise<void>;
}

export function newCallSid(): CallSid {
  return `CA${randomBytes(16).toString('hex')}` as CallSid;
}

export function newRecordingSid(): RecordingSid {
  return `RE${randomBytes(16).toString('hex')}` as RecordingSid;
}

function newBusiness(): string {
  return `biz-${randomBytes(6).toString('hex')}`;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

/** The order `list` promises: startedAt DESC NULLS LAST, then createdAt DESC, then callSid DESC. */
function compareNewestFirst(a: CallRecord, b: CallRecord): number {
  if (a.startedAt !== b.startedAt) {
    if (a.startedAt === null) return 1;
    if (b.startedAt === null) return -1;
    return a.startedAt < b.startedAt ? 1 : -1;
  }
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.callSid < b.callSid ? 1 : a.callSid > b.callSid ? -1 : 0;
}

async function listAll(log: CallLog, businessId: string, limit: number): Promise<CallRecord[]> {
  const all: CallRecord[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await log.list(businessId, { limit, cursor });
    assert.ok(page.calls.length <= limit);
    all.push(...page.calls);
    if (page.nextCursor === null) return all;
    assert.equal(page.calls.length, limit, 'only the last page may be short');
    cursor = page.nextCursor;
  }
  assert.fail('paging did not terminate');
}

export function callLogContract(name: string, make: () => Promise<CallLogSubject>): void {
  /** Opens a subject whose instances are closed and whose database is removed when the test ends. */
  async function open(t: TestContext, options: { migrate?: boolean } = {}) {
    const subject = await make();
    const instances: CallLog[] = [subject.log];
    t.after(async () => {
      for (const instance of instances) await instance.close();
      await subject.cleanup();
    });
    if (options.migrate !== false) await subject.log.migrate();
    const second = subject.makeSecond
      ? async () => {
          const instance = await subject.makeSecond!();
          instances.push(instance);
          return instance;
        }
      : undefined;
    return { log: subject.log, second };
  }

  describe(`CallLog contract: ${name}`, () => {
    test('matches interface', async (t) => {
      const { log } = await open(t, { migrate: false });
      for (const method of [
        'migrate',
        'get',
        'getForBusiness',
        'businessesOf',
        'upsert',
        'setResolution',
        'setResolutionByRecording',
        'list',
        'markPurged',
        'isPurged',
        'recordPlays',
        'listPlays',
        'ping',
        'schemaVersion',
        'close',
      ] as const) {
        assert.equal(typeof log[method], 'function', `${method} is a method`);
      }
    });

    test('migrate is idempotent', async (t) => {
      const { log } = await open(t);
      await log.migrate();
      await log.migrate();
      const business = newBusiness();
      const callSid = newCallSid();
      await log.upsert({ businessId: business, callSid });
      await log.migrate();
      assert.equal((await log.get(callSid))?.businessId, business, 'migrating again keeps the data');
    });

    test('schemaVersion reads back the version migrated to: 0 before, the latest after', async (t) => {
      const { log } = await open(t, { migrate: false });
      assert.equal(await log.schemaVersion(), 0);
      await log.migrate();
      const latest = await log.schemaVersion();
      assert.equal(latest, SQLITE_MIGRATIONS.at(-1)!.version);
      assert.equal(latest, POSTGRES_MIGRATIONS.at(-1)!.version, 'both backends reach the same version');
    });

    test('ping answers true while open', async (t) => {
      const { log } = await open(t);
      assert.equal(await log.ping(), true);
    });

    test('a call read again after a change shows the change, whichever instance made it', async (t) => {
      const { log, second } = await open(t);
      const [acme, globex] = [newBusiness(), newBusiness()];
      const [callSid, absent] = [newCallSid(), newCallSid()];
      await log.upsert({ businessId: acme, callSid });
      // Read first, so that an instance remembering what it read would answer from memory afterwards.
      assert.equal((await log.getForBusiness(acme, callSid))?.purgedAt, null);
      assert.equal(await log.get(absent), undefined);
      await log.markPurged(callSid, null);
      assert.notEqual((await log.getForBusiness(acme, callSid))?.purgedAt, null, 'its own write');
      await log.upsert({ businessId: acme, callSid: absent });
      assert.equal((await log.get(absent))?.businessId, acme, 'a call that was missing');
      if (!second) return;
      const other = await second();
      const elsewhere = newCallSid();
      assert.equal(await log.getForBusiness(globex, elsewhere), undefined);
      await other.upsert({ businessId: globex, callSid: elsewhere });
      await other.markPurged(absent, null);
      assert.equal((await log.getForBusiness(globex, elsewhere))?.businessId, globex, "another's new call");
      assert.notEqual((await log.get(absent))?.purgedAt, null, "another instance's purge");
      assert.equal(await log.getForBusiness(acme, elsewhere), undefined, 'still only for its business');
    });

    test('get and getForBusiness miss with undefined', async (t) => {
      const { log } = await open(t);
      assert.equal(await log.get(newCallSid()), undefined);
      assert.equal(await log.getForBusiness(newBusiness(), newCallSid()), undefined);
    });

    test('upsert registers a call with defaults and returns it', async (t) => {
      const { log } = await open(t);
      const business = newBusiness();
      const callSid = newCallSid();
      const before = Date.now();
      const created = await log.upsert({ businessId: business, callSid });
      assert.deepEqual(
        { ...created, createdAt: '', updatedAt: '' },
        {
          businessId: business,
          callSid,
          parentCallSid: null,
          recordingSid: null,
          recordingOwnerCallSid: null,
          recordingState: 'unknown',
          recordingSize: null,
          recordingDurationS: null,
          direction: null,
          from: null,
          to: null,
          startedAt: null,
          durationS: null,
          purgedAt: null,
          recordingStatus: null,
          createdAt: '',
          updatedAt: '',
        },
      );
      assert.match(created.createdAt, ISO);
      assert.equal(created.updatedAt, created.createdAt);
      assert.ok(
        Date.parse(created.createdAt) >= before - 1000 && Date.parse(created.createdAt) <= Date.now() + 1000,
      );
      assert.deepEqual(await log.get(callSid), created);
    });

    test('upsert stores every field', async (t) => {
      const { log } = await open(t);
      const parent = newCallSid();
      const input: CallUpsert = {
        businessId: newBusiness(),
        callSid: newCallSid(),
        parentCallSid: parent,
        direction: 'outbound-dial',
        from: '+15550000001',
        to: "+1555'; DROP TABLE calls; --",
        startedAt: '2024-05-01T12:00:00.000Z',
        durationS: 42,
      };
      const stored = await log.upsert(input);
      assert.equal(stored.parentCallSid, parent);
      assert.equal(stored.direction, 'outbound-dial');
      assert.equal(stored.from, '+15550000001');
      assert.equal(stored.to, input.to);
      assert.equal(stored.startedAt, '2024-05-01T12:00:00.000Z');
      assert.equal(stored.durationS, 42);
      assert.deepEqual(await log.getForBusiness(input.businessId, input.callSid), stored);
    });

    test('getForBusiness hides another business’s call exactly like a missing one', async (t) => {
      const { log } = await open(t);
      const owner = newBusiness();
      const other = newBusiness();
      const callSid = newCallSid();
      await log.upsert({ businessId: owner, callSid });
      assert.equal((await log.getForBusiness(owner, callSid))?.callSid, callSid);
      assert.equal(await log.getForBusiness(other, callSid), undefined);
      assert.equal((await log.get(callSid))?.businessId, owner, 'get ignores the business');
    });

    test('getForBusinessNow, where a log has it, answers what getForBusiness answers, at once', async (t) => {
      const { log, second } = await open(t);
      const now = log.getForBusinessNow?.bind(log);
      if (now === undefined) {
        t.diagnostic('this call log answers only with promises');
        return;
      }
      const [acme, globex] = [newBusiness(), newBusiness()];
      const [callSid, missing] = [newCallSid(), newCallSid()];
      assert.equal(now(acme, callSid), undefined, 'not yet registered');
      await log.upsert({ businessId: acme, callSid });
      const found = now(acme, callSid);
      assert.equal(found instanceof Promise, false);
      assert.deepEqual(found, await log.getForBusiness(acme, callSid), 'its own write, at once');
      assert.equal(now(globex, callSid), undefined, "another business's call, like a missing one");
      assert.equal(now(acme, missing), undefined);
      await log.markPurged(callSid, null);
      assert.notEqual(now(acme, callSid)?.purgedAt, null, 'its own purge');
      assert.throws(() => now(acme, 'CA1' as CallSid), { code: 'RECGATE_INVALID_CALL_SID' });
      assert.throws(() => now('', callSid), { code: 'RECGATE_INVALID_REQUEST' });
      if (second !== undefined) {
        const other = await second();
        await other.upsert({ businessId: globex, callSid: missing });
        assert.equal(now(globex, missing)?.businessId, globex, "another instance's new call");
      }
      await log.close();
      assert.throws(() => now(acme, callSid), { code: 'RECGATE_DATABASE_ERROR' });
    });

    test('businessesOf maps registered calls to their business and leaves out the rest', async (t) => {
      const { log, second } = await open(t);
      const acme = newBusiness();
      const globex = newBusiness();
      const ours = newCallSid();
      const theirs = newCallSid();
      const nobody = newCallSid();
      await log.upsert({ businessId: acme, callSid: ours });
      await log.upsert({ businessId: globex, callSid: theirs });
      assert.deepEqual(
        await log.businessesOf([ours, theirs, nobody, ours]),
        new Map([
          [ours, acme],
          [theirs, globex],
        ]),
      );
      assert.deepEqual(await log.businessesOf([]), new Map());
      assert.deepEqual(await log.businessesOf([nobody]), new Map());
      const many = Array.from({ length: MAX_BUSINESSES_OF - 1 }, newCallSid);
      assert.deepEqual(await log.businessesOf([...many, theirs]), new Map([[theirs, globex]]));
      if (second) assert.deepEqual(await (await second()).businessesOf([ours]), new Map([[ours, acme]]));

      await rejectsWith(
        log.businessesOf([...many, theirs, ours]),
        'RECGATE_INVALID_REQUEST',
        new RegExp(`at most ${MAX_BUSINESSES_OF}`),
      );
      await rejectsWith(log.businessesOf([ours, 'CA123' as CallSid]), 'RECGATE_INVALID_CALL_SID');
      await rejectsWith(log.businessesOf([`${ours}' OR '1'='1` as CallSid]), 'RECGATE_INVALID_CALL_SID');
      await rejectsWith(log.businessesOf('nope' as unknown as CallSid[]), 'RECGATE_INVALID_REQUEST');
    });

    test('upsert keeps omitted fields and clears explicit nulls', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const callSid = newCallSid();
      const parent = newCallSid();
      const first = await log.upsert({
        businessId,
        callSid,
        parentCallSid: parent,
        direction: 'inbound',
        from: '+1',
        to: '+2',
        startedAt: '2024-01-01T00:00:00Z',
        durationS: 10,
      });
      const second = await log.upsert({ businessId, callSid, durationS: 11, to: undefined });
      assert.deepEqual(
        { ...second, updatedAt: first.updatedAt },
        { ...first, durationS: 11 },
        'only durationS changed',
      );
      assert.equal(second.createdAt, first.createdAt, 'createdAt never changes');
      assert.ok(second.updatedAt >= first.updatedAt);
      const third = await log.upsert({
        businessId,
        callSid,
        parentCallSid: null,
        from: null,
        startedAt: null,
      });
      assert.equal(third.parentCallSid, null);
      assert.equal(third.from, null);
      assert.equal(third.startedAt, null);
      assert.equal(third.to, '+2');
      assert.equal(third.direction, 'inbound');
    });

    test('upsert of another business’s call throws RECGATE_FORBIDDEN and changes nothing', async (t) => {
      const { log } = await open(t);
      const owner = newBusiness();
      const callSid = newCallSid();
      const stored = await log.upsert({ businessId: owner, callSid, from: '+1' });
      await rejectsWith(
        log.upsert({ businessId: newBusiness(), callSid, from: '+666', recordingSid: newRecordingSid() }),
        'RECGATE_FORBIDDEN',
      );
      assert.deepEqual(await log.get(callSid), stored);
    });

    test('an explicit recordingSid makes the recording available, owned by the call', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const callSid = newCallSid();
      const recordingSid = newRecordingSid();
      const stored = await log.upsert({ businessId, callSid, recordingSid });
      assert.equal(stored.recordingSid, recordingSid);
      assert.equal(stored.recordingState, 'available');
      assert.equal(stored.recordingOwnerCallSid, callSid);
    });

    test('changing recordingSid resets the resolution; repeating it keeps it', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const callSid = newCallSid();
      const parent = newCallSid();
      const first = newRecordingSid();
      await log.upsert({ businessId, callSid, recordingSid: first });
      await log.setResolution(callSid, {
        recordingState: 'available',
        recordingSize: 1234,
        recordingDurationS: 7.5,
      });

      const same = await log.upsert({ businessId, callSid, recordingSid: first, from: '+1' });
      assert.equal(same.recordingState, 'available');
      assert.equal(same.recordingSize, 1234, 'the same SID keeps what the resolver found');
      assert.equal(same.recordingDurationS, 7.5);

      const omitted = await log.upsert({ businessId, callSid, to: '+2' });
      assert.equal(omitted.recordingSize, 1234, 'an omitted SID keeps the resolution');

      const second = newRecordingSid();
      const changed = await log.upsert({ businessId, callSid, recordingSid: second });
      assert.equal(changed.recordingSid, second);
      assert.equal(changed.recordingState, 'available');
      assert.equal(changed.recordingOwnerCallSid, callSid);
      assert.equal(changed.recordingSize, null);
      assert.equal(changed.recordingDurationS, null);

      await log.setResolution(callSid, {
        recordingState: 'available',
        recordingSid: first,
        recordingOwnerCallSid: parent,
        recordingSize: 99,
      });
      const cleared = await log.upsert({ businessId, callSid, recordingSid: null });
      assert.equal(cleared.recordingSid, null);
      assert.equal(cleared.recordingState, 'unknown');
      assert.equal(cleared.recordingOwnerCallSid, null);
      assert.equal(cleared.recordingSize, null);
    });

    test('setResolution stores what the resolver found, keeping omitted fields', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const callSid = newCallSid();
      const parent = newCallSid();
      const recordingSid = newRecordingSid();
      const created = await log.upsert({ businessId, callSid, parentCallSid: parent, from: '+1' });
      await log.setResolution(callSid, {
        recordingState: 'available',
        recordingSid,
        recordingOwnerCallSid: parent,
        recordingSize: 2 ** 40,
        recordingDurationS: 61,
      });
      const resolved = await log.get(callSid);
      assert.ok(resolved);
      assert.equal(resolved.recordingState, 'available');
      assert.equal(resolved.recordingSid, recordingSid);
      assert.equal(resolved.recordingOwnerCallSid, parent);
      assert.equal(resolved.recordingSize, 2 ** 40, 'sizes above 2^32 survive');
      assert.equal(resolved.recordingDurationS, 61);
      assert.equal(resolved.from, '+1');
      assert.equal(resolved.createdAt, created.createdAt);

      await log.setResolution(callSid, { recordingState: 'deleted' });
      const deleted = await log.get(callSid);
      assert.deepEqual(
        { ...deleted, updatedAt: '' },
        { ...resolved, recordingState: 'deleted', updatedAt: '' },
      );

      await log.setResolution(callSid, {
        recordingState: 'absent',
        recordingSid: null,
        recordingOwnerCallSid: null,
        recordingSize: null,
        recordingDurationS: null,
      });
      const absent = await log.get(callSid);
      assert.equal(absent?.recordingState, 'absent');
      assert.equal(absent?.recordingSid, null);
      assert.equal(absent?.recordingOwnerCallSid, null);
      assert.equal(absent?.recordingSize, null);
      assert.equal(absent?.recordingDurationS, null);
    });

    test('setResolution on an unknown call is a no-op', async (t) => {
      const { log } = await open(t);
      const callSid = newCallSid();
      await log.setResolution(callSid, { recordingState: 'available', recordingSid: newRecordingSid() });
      assert.equal(await log.get(callSid), undefined);
    });

    test('setResolutionByRecording marks every call with that recording, and only those', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const parent = newCallSid();
      const child = newCallSid();
      const unrelated = newCallSid();
      const recordingSid = newRecordingSid();
      await log.upsert({ businessId, callSid: parent, recordingSid });
      await log.upsert({ businessId, callSid: child, parentCallSid: parent });
      await log.setResolution(child, {
        recordingState: 'available',
        recordingSid,
        recordingOwnerCallSid: parent,
      });
      const otherRecording = newRecordingSid();
      await log.upsert({ businessId, callSid: unrelated, recordingSid: otherRecording });

      await log.setResolutionByRecording(recordingSid, { recordingState: 'deleted' });
      for (const sid of [parent, child]) {
        const call = await log.get(sid);
        assert.equal(call?.recordingState, 'deleted');
        assert.equal(call?.recordingSid, recordingSid, 'the SID is kept when omitted');
      }
      assert.equal((await log.get(child))?.recordingOwnerCallSid, parent);
      assert.equal((await log.get(unrelated))?.recordingState, 'available');

      await log.setResolutionByRecording(recordingSid, { recordingState: 'available', recordingSize: 500 });
      assert.equal((await log.get(parent))?.recordingSize, 500);
      assert.equal((await log.get(child))?.recordingSize, 500);
      assert.equal((await log.get(unrelated))?.recordingSize, null);

      await log.setResolutionByRecording(newRecordingSid(), { recordingState: 'deleted' });
      assert.equal(
        (await log.get(parent))?.recordingState,
        'available',
        'an unknown recording touches nothing',
      );
    });

    test('markPurged marks the call and every call playing the recording, remembers the recording, and a new recording clears it', async (t) => {
      const { log } = await open(t);
      const business = newBusiness();
      const recording = newRecordingSid();
      const [parent, child, other, unrelated] = [newCallSid(), newCallSid(), newCallSid(), newCallSid()];
      await log.upsert({ businessId: business, callSid: parent, recordingSid: recording });
      await log.upsert({ businessId: business, callSid: child, parentCallSid: parent });
      await log.setResolution(child, {
        recordingState: 'available',
        recordingSid: recording,
        recordingOwnerCallSid: parent,
      });
      await log.upsert({ businessId: business, callSid: other });
      await log.upsert({ businessId: business, callSid: unrelated, recordingSid: newRecordingSid() });
      assert.equal(await log.isPurged(recording), false);
      assert.equal(
        await log.markPurged(child, recording),
        2,
        'the call and the parent playing the recording',
      );
      assert.equal(await log.isPurged(recording), true);
      for (const sid of [parent, child]) assert.match(String((await log.get(sid))?.purgedAt), ISO);
      assert.equal((await log.get(unrelated))?.purgedAt, null);
      assert.equal(await log.markPurged(other, null), 1, 'a call with no known recording is marked alone');
      assert.match(String((await log.get(other))?.purgedAt), ISO);
      assert.equal(await log.markPurged(newCallSid(), null), 0, 'an unknown call marks nothing');
      await log.upsert({ businessId: business, callSid: parent, recordingSid: recording });
      assert.notEqual(
        (await log.get(parent))?.purgedAt,
        null,
        'repeating the purged recording keeps the mark',
      );
      const replaced = await log.upsert({
        businessId: business,
        callSid: parent,
        recordingSid: newRecordingSid(),
      });
      assert.equal(replaced.purgedAt, null, 'another recording clears the mark');
      assert.equal(await log.isPurged(recording), true, 'the recording itself stays purged');
    });

    test('plays are recorded in batches and listed newest first, per call, page by page', async (t) => {
      const { log } = await open(t);
      const [callSid, otherCall] = [newCallSid(), newCallSid()];
      const recordingSid = newRecordingSid();
      const play = (i: number, sid = callSid) => ({
        playedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
        businessId: 'biz-a',
        callSid: sid,
        recordingSid,
        bytes: i * 1000,
        status: i % 2 === 0 ? 200 : 206,
        requestId: `req-${i}`,
      });
      await log.recordPlays([]);
      await log.recordPlays(Array.from({ length: 5 }, (_, i) => play(i)));
      await log.recordPlays([play(99, otherCall), play(5)]);
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await log.listPlays(callSid, { limit: 2, cursor });
        assert.ok(page.plays.length <= 2);
        seen.push(...page.plays.map((p) => p.requestId));
        cursor = page.nextCursor ?? undefined;
      } while (cursor !== undefined);
      assert.deepEqual(seen, ['req-5', 'req-4', 'req-3', 'req-2', 'req-1', 'req-0']);
      const [latest] = (await log.listPlays(callSid, { limit: 1 })).plays;
      assert.deepEqual(latest, play(5));
      assert.deepEqual((await log.listPlays(newCallSid(), { limit: 10 })).plays, []);
      await rejectsWith(log.recordPlays([{ ...play(1), bytes: -1 }]), 'RECGATE_INVALID_REQUEST', /bytes/);
      await rejectsWith(
        log.recordPlays([{ ...play(1), callSid: 'CAnope' as CallSid }]),
        'RECGATE_INVALID_CALL_SID',
      );
      await rejectsWith(
        log.listPlays(callSid, { limit: 5, cursor: '!!' }),
        'RECGATE_INVALID_REQUEST',
        /cursor/,
      );
      assert.equal(
        (await log.listPlays(callSid, { limit: 200 })).plays.length,
        6,
        'a refused batch wrote nothing',
      );
    });

    test('timestamps are normalised to UTC ISO 8601 with milliseconds', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const cases: [string, string][] = [
        ['2024-05-01T14:00:00+02:00', '2024-05-01T12:00:00.000Z'],
        ['2024-05-01T12:00Z', '2024-05-01T12:00:00.000Z'],
        ['2024-05-01T12:00:00.123456Z', '2024-05-01T12:00:00.123Z'],
        ['Wed, 01 May 2024 12:00:00 +0000', '2024-05-01T12:00:00.000Z'],
      ];
      for (const [input, expected] of cases) {
        const stored = await log.upsert({ businessId, callSid: newCallSid(), startedAt: input });
        assert.equal(stored.startedAt, expected, input);
      }
    });

    test('invalid input is rejected naming the field, before touching the database', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const callSid = newCallSid();
      const bad = (input: Record<string, unknown>) =>
        log.upsert({ businessId, callSid, ...input } as unknown as CallUpsert);
      await rejectsWith(bad({ callSid: 'CA123' }), 'RECGATE_INVALID_CALL_SID');
      await rejectsWith(bad({ businessId: '' }), 'RECGATE_INVALID_REQUEST', /businessId/);
      await rejectsWith(bad({ businessId: 7 }), 'RECGATE_INVALID_REQUEST', /businessId/);
      await rejectsWith(bad({ parentCallSid: 'CAxyz' }), 'RECGATE_INVALID_REQUEST', /parentCallSid/);
      await rejectsWith(bad({ parentCallSid: callSid }), 'RECGATE_INVALID_REQUEST', /parentCallSid/);
      await rejectsWith(
        bad({ recordingSid: `RE${'A'.repeat(32)}` }),
        'RECGATE_INVALID_REQUEST',
        /recordingSid/,
      );
      await rejectsWith(bad({ startedAt: '2024-05-01 12:00:00' }), 'RECGATE_INVALID_REQUEST', /startedAt/);
      await rejectsWith(bad({ startedAt: '2024-13-45T12:00:00Z' }), 'RECGATE_INVALID_REQUEST', /startedAt/);
      await rejectsWith(bad({ durationS: -1 }), 'RECGATE_INVALID_REQUEST', /durationS/);
      await rejectsWith(bad({ durationS: Number.NaN }), 'RECGATE_INVALID_REQUEST', /durationS/);
      await rejectsWith(bad({ from: 5 }), 'RECGATE_INVALID_REQUEST', /from/);
      await rejectsWith(log.get('../etc/passwd' as CallSid), 'RECGATE_INVALID_CALL_SID');
      await rejectsWith(
        log.setResolution(callSid, { recordingState: 'gone' as 'deleted' }),
        'RECGATE_INVALID_REQUEST',
        /recordingState/,
      );
      await rejectsWith(
        log.setResolution(callSid, { recordingState: 'available', recordingSize: 1.5 }),
        'RECGATE_INVALID_REQUEST',
        /recordingSize/,
      );
      await rejectsWith(
        log.setResolutionByRecording('RE1' as RecordingSid, { recordingState: 'deleted' }),
        'RECGATE_INVALID_REQUEST',
        /recordingSid/,
      );
      assert.equal(await log.get(callSid), undefined);
    });

    test('list returns the business’s calls newest first, NULL start times last, ties by createdAt then SID', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const starts = [
        '2024-03-01T10:00:00Z',
        null,
        '2024-03-02T10:00:00Z',
        '2024-03-01T10:00:00Z',
        null,
        '2024-03-01T10:00:00Z',
        '2024-02-28T23:59:59.999Z',
      ];
      const records: CallRecord[] = [];
      for (const startedAt of starts)
        records.push(await log.upsert({ businessId, callSid: newCallSid(), startedAt }));
      await log.upsert({
        businessId: newBusiness(),
        callSid: newCallSid(),
        startedAt: '2030-01-01T00:00:00Z',
      });

      const page = await log.list(businessId, { limit: 200 });
      assert.equal(page.nextCursor, null);
      const expected = [...records].sort(compareNewestFirst).map((c) => c.callSid);
      assert.deepEqual(
        page.calls.map((c) => c.callSid),
        expected,
      );
      assert.equal(page.calls[0]?.startedAt, '2024-03-02T10:00:00.000Z');
      assert.deepEqual(
        page.calls.slice(-2).map((c) => c.startedAt),
        [null, null],
      );
      assert.deepEqual(page.calls, [...records].sort(compareNewestFirst), 'list returns full records');
    });

    test('list of a business without calls is empty', async (t) => {
      const { log } = await open(t);
      assert.deepEqual(await log.list(newBusiness(), { limit: 10 }), { calls: [], nextCursor: null });
    });

    test('cursors page through every call exactly once', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const records: CallRecord[] = [];
      for (let i = 0; i < 23; i++) {
        const startedAt = i % 5 === 0 ? null : `2024-04-0${(i % 3) + 1}T08:00:00Z`;
        records.push(await log.upsert({ businessId, callSid: newCallSid(), startedAt }));
      }
      const expected = [...records].sort(compareNewestFirst).map((c) => c.callSid);
      for (const limit of [1, 2, 5, 22, 23, 24, 200]) {
        const all = await listAll(log, businessId, limit);
        assert.deepEqual(
          all.map((c) => c.callSid),
          expected,
          `limit ${limit}`,
        );
      }
      const exact = await log.list(businessId, { limit: 23 });
      assert.equal(exact.nextCursor, null, 'a full last page has no next cursor');
      assert.match((await log.list(businessId, { limit: 22 })).nextCursor ?? '', /^[A-Za-z0-9_-]+$/);
    });

    test('inserts between pages neither duplicate nor skip calls', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const original: CallSid[] = [];
      for (let i = 0; i < 10; i++) {
        const startedAt = `2024-06-${String(10 + i).padStart(2, '0')}T00:00:00Z`;
        original.push((await log.upsert({ businessId, callSid: newCallSid(), startedAt })).callSid);
      }
      const first = await log.list(businessId, { limit: 4 });
      assert.ok(first.nextCursor);

      const newest = newCallSid();
      const older = newCallSid();
      const undated = newCallSid();
      await log.upsert({ businessId, callSid: newest, startedAt: '2024-07-01T00:00:00Z' });
      await log.upsert({ businessId, callSid: older, startedAt: '2024-01-01T00:00:00Z' });
      await log.upsert({ businessId, callSid: undated });
      // Updating a call already paged past must not bring it back.
      await log.upsert({ businessId, callSid: first.calls[0]!.callSid, from: '+1' });

      const seen = first.calls.map((c) => c.callSid);
      let cursor: string | null = first.nextCursor;
      while (cursor) {
        const page = await log.list(businessId, { limit: 4, cursor });
        seen.push(...page.calls.map((c) => c.callSid));
        cursor = page.nextCursor;
      }
      assert.equal(new Set(seen).size, seen.length, 'no call appears twice');
      for (const sid of original) assert.ok(seen.includes(sid), 'every original call appears');
      assert.ok(!seen.includes(newest), 'a newer call does not appear behind the cursor');
      assert.ok(seen.includes(older));
      assert.deepEqual(seen.slice(-2), [older, undated]);
    });

    test('list rejects a limit outside 1..200, naming limit', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      for (const limit of [0, -1, 201, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '10', undefined]) {
        await rejectsWith(
          log.list(businessId, { limit: limit as number }),
          'RECGATE_INVALID_REQUEST',
          /limit/,
        );
      }
      await log.list(businessId, { limit: 1 });
      await log.list(businessId, { limit: 200 });
    });

    test('list rejects a malformed cursor, naming cursor', async (t) => {
      const { log } = await open(t);
      const businessId = newBusiness();
      const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
      const sid = newCallSid();
      for (const cursor of [
        '',
        'not a cursor!',
        'AAAA',
        Buffer.from('{"a":').toString('base64url'),
        encode({ startedAt: null }),
        encode([null, '2024-01-01T00:00:00.000Z']),
        encode([null, '2024-01-01T00:00:00Z', sid]),
        encode(['yesterday', '2024-01-01T00:00:00.000Z', sid]),
        encode([null, '2024-01-01T00:00:00.000Z', 'CA1; DROP TABLE calls']),
        encode(['2024-02-30T00:00:00.000Z', '2024-01-01T00:00:00.000Z', sid]),
        'A'.repeat(5000),
      ]) {
        await rejectsWith(log.list(businessId, { limit: 10, cursor }), 'RECGATE_INVALID_REQUEST', /cursor/);
      }
      const valid = encode(['2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z', sid]);
      assert.deepEqual(await log.list(businessId, { limit: 10, cursor: valid }), {
        calls: [],
        nextCursor: null,
      });
    });

    test('paging returns exactly the sorted set (property)', async (t) => {
      const { log } = await open(t);
      const startedAt = fc.option(
        fc.constantFrom('2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.001Z', '2023-12-31T23:00:00.000Z'),
        { nil: null },
      );
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ startedAt, otherBusiness: fc.boolean() }), { maxLength: 25 }),
          fc.integer({ min: 1, max: 7 }),
          async (calls, limit) => {
            const businessId = newBusiness();
            const otherId = newBusiness();
            const mine: CallRecord[] = [];
            for (const call of calls) {
              const stored = await log.upsert({
                businessId: call.otherBusiness ? otherId : businessId,
                callSid: newCallSid(),
                startedAt: call.startedAt,
              });
              if (!call.otherBusiness) mine.push(stored);
            }
            const paged = await listAll(log, businessId, limit);
            assert.deepEqual(paged, [...mine].sort(compareNewestFirst));
          },
        ),
        { numRuns: 30 },
      );
    });

    test('close is idempotent; afterwards ping is false and calls fail with RECGATE_DATABASE_ERROR', async (t) => {
      const { log } = await open(t);
      await log.close();
      await log.close();
      assert.equal(await log.ping(), false);
      await assert.rejects(log.get(newCallSid()), (err: unknown) => {
        assert.ok(isRecgateError(err));
        assert.equal(err.code, 'RECGATE_DATABASE_ERROR');
        assert.equal(err.message, ERRORS.RECGATE_DATABASE_ERROR.message, 'no driver detail reaches clients');
        assert.ok(err.cause, 'the cause is kept for the logs');
        return true;
      });
      await rejectsWith(
        log.upsert({ businessId: newBusiness(), callSid: newCallSid() }),
        'RECGATE_DATABASE_ERROR',
      );
      await rejectsWith(log.list(newBusiness(), { limit: 1 }), 'RECGATE_DATABASE_ERROR');
      await rejectsWith(log.migrate(), 'RECGATE_DATABASE_ERROR');
    });

    test('two instances on the same database migrate concurrently and cooperate', async (t) => {
      const { log: a, second } = await open(t, { migrate: false });
      if (!second) {
        t.skip(`${name} cannot open a second instance on the same database`);
        return;
      }
      const b = await second();
      await Promise.all([a.migrate(), b.migrate(), a.migrate(), b.migrate()]);

      const businessId = newBusiness();
      const callSid = newCallSid();
      const written = await a.upsert({ businessId, callSid, from: '+1', startedAt: '2024-01-01T00:00:00Z' });
      assert.deepEqual(await b.getForBusiness(businessId, callSid), written, 'b reads what a wrote');

      const recordingSid = newRecordingSid();
      await b.upsert({ businessId, callSid, recordingSid });
      await b.setResolution(callSid, { recordingState: 'available', recordingSize: 10 });
      const seenByA = await a.get(callSid);
      assert.equal(seenByA?.recordingSid, recordingSid);
      assert.equal(seenByA?.recordingSize, 10);
      assert.equal(seenByA?.from, '+1');

      const more = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? a : b).upsert({ businessId, callSid: newCallSid(), startedAt: '2024-01-02T00:00:00Z' }),
        ),
      );
      const fromA = await listAll(a, businessId, 6);
      const fromB = await listAll(b, businessId, 6);
      assert.deepEqual(fromA, fromB);
      assert.equal(fromA.length, 21);
      assert.deepEqual(fromA, [...more, (await a.get(callSid))!].sort(compareNewestFirst));
    });

    test('two instances racing to register a call for different businesses: exactly one wins', async (t) => {
      const { log: a, second } = await open(t);
      if (!second) {
        t.skip(`${name} cannot open a second instance on the same database`);
        return;
      }
      const b = await second();
      await b.migrate();
      for (let round = 0; round < 5; round++) {
        const callSid = newCallSid();
        const [first, other] = [newBusiness(), newBusiness()];
        const results = await Promise.allSettled([
          a.upsert({ businessId: first, callSid }),
          b.upsert({ businessId: other, callSid }),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r) => r.status === 'rejected');
        assert.equal(won.length, 1);
        assert.equal(lost.length, 1);
        assert.ok(isRecgateError(lost[0]!.reason) && lost[0]!.reason.code === 'RECGATE_FORBIDDEN');
        const owner = (await a.get(callSid))?.businessId;
        assert.equal(owner, results[0]!.status === 'fulfilled' ? first : other);
      }
    });
  });
}
