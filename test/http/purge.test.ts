/**
 * Purge and privacy, end to end: an operator's purge removes the local copy and keeps it from being
 * fetched again, for the call and every call playing the recording; a recording Twilio reports deleted, by
 * webhook or by a 404 on any request for any variant, is removed too (unless the operator keeps such
 * copies); and every play lands in the audit trail (its log line and its row). Each is counted on /metrics.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { deleteAtTwilio, mediaRequests } from '../helpers/admin-cli.js';
import { sha256, until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { metric } from '../helpers/metrics.js';
import { callFiles, finishedNames, settledFiles, storeRecording } from '../helpers/recordings.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function call(
  stack: Stack,
  method: 'GET' | 'DELETE' | 'POST',
  url: string,
  headers: Record<string, string> = {},
  body?: string,
) {
  const res = await request(`${stack.url}${url}`, { method, headers, ...(body ? { body } : {}) });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, bytes, json: () => JSON.parse(bytes.toString()) };
}

/** The call's files, lock file aside, sorted. */
async function files(stack: Stack, sid: string): Promise<string[]> {
  return (await callFiles(path.join(stack.dataDir, 'recordings'), sid)).filter((n) => !n.endsWith('.lock'));
}

/** The call's files once its download is over (the response may end before the rename). */
function settled(stack: Stack, sid: string): Promise<string[]> {
  return settledFiles(path.join(stack.dataDir, 'recordings'), sid);
}

/** A `<Dial>` pair at the emulator whose recording sits on the parent, both legs registered to `business`. */
async function dial(stack: Stack, business: string) {
  const parent = newCallSid();
  const child = newCallSid();
  const rec = await stack.emulator.createRecording({ call_sid: parent, bytes: 8_000 });
  await stack.register({ businessId: business, callSid: parent });
  await stack.register({ businessId: business, callSid: child, parentCallSid: parent });
  return {
    parent,
    child,
    recordingSid: rec.recording_sid as RecordingSid,
    sha256: rec.sha256,
    size: rec.size,
  };
}

const UPSTREAM_DELETED = 'recgate_recordings_removed_total{reason="upstream_deleted"}';

async function webhook(stack: Stack, params: Record<string, string>) {
  assert.equal(await stack.recordingStatus(params), 204);
}

describe('purge and the audit trail', () => {
  let stack: Stack;
  let acme: Record<string, string>;
  /** The gateway's log lines. */
  const log = captureLogs({ plain: true });

  before(async () => {
    stack = await startStack({ config: { auditDb: true }, logger: log.logger });
    acme = { authorization: `Bearer ${await stack.token('acme')}` };
  });
  after(() => stack?.close());

  it('purge removes the local copy, marks every call playing it, and nothing fetches it again', async () => {
    const pair = await dial(stack, 'acme');
    const played = await call(stack, 'GET', `/api/calls/${pair.child}/download`, acme);
    assert.equal(played.status, 200);
    assert.equal(sha256(played.bytes), pair.sha256);
    assert.deepEqual(await settled(stack, pair.parent), finishedNames(pair.parent));
    const fetched = stack.emulator.stats().total_media_requests;
    const removed = 'recgate_recordings_removed_total{reason="purge"}';
    const removedBefore = await metric(stack, removed);

    const purged = await call(stack, 'DELETE', `/api/admin/calls/${pair.child}/recording`, admin);
    assert.equal(purged.status, 200, purged.bytes.toString());
    assert.deepEqual(purged.json(), {
      call_sid: pair.child,
      recording_sid: pair.recordingSid,
      owner_call_sid: pair.parent,
      removed_bytes: pair.size,
      calls_marked: 1,
    });
    assert.deepEqual(await files(stack, pair.parent), []);
    assert.equal(await metric(stack, removed), removedBefore + 1, 'the removal is counted');
    for (const sid of [pair.child, pair.parent]) {
      const refused = await call(stack, 'GET', `/api/calls/${sid}/download`, acme);
      assert.equal(refused.status, 410);
      assert.equal(refused.json().error.code, 'RECGATE_RECORDING_PURGED');
      const details = (await call(stack, 'GET', `/api/calls/${sid}`, acme)).json();
      assert.match(details.recording.purged_at, /^\d{4}-\d\d-\d\dT/);
    }
    assert.equal(stack.emulator.stats().total_media_requests, fetched, 'nothing was fetched again');

    const again = await call(stack, 'DELETE', `/api/admin/calls/${pair.child}/recording`, admin);
    assert.equal(again.status, 200);
    assert.equal(again.json().removed_bytes, 0, 'a repeated purge removes nothing more');
    assert.equal(await metric(stack, removed), removedBefore + 1, 'and counts no removal');
  });

  it('a call that resolves to a purged recording later is refused too, and a new recording plays again', async () => {
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 200);
    assert.equal(
      (await call(stack, 'DELETE', `/api/admin/calls/${pair.parent}/recording`, admin)).status,
      200,
    );
    // The child never played, so nothing marked it; its first lookup finds the purged parent recording.
    const child = await call(stack, 'GET', `/api/calls/${pair.child}/download`, acme);
    assert.equal(child.status, 410);
    assert.equal(child.json().error.code, 'RECGATE_RECORDING_PURGED');

    const fresh = await stack.emulator.createRecording({ call_sid: pair.parent, bytes: 12_000 });
    await stack.register({
      businessId: 'acme',
      callSid: pair.parent,
      recordingSid: fresh.recording_sid as RecordingSid,
    });
    const replay = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme);
    assert.equal(replay.status, 200);
    assert.equal(sha256(replay.bytes), fresh.sha256);
  });

  it('purge needs the admin token and a known call', async () => {
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'DELETE', `/api/admin/calls/${pair.parent}/recording`)).status, 401);
    assert.equal(
      (await call(stack, 'DELETE', `/api/admin/calls/${pair.parent}/recording`, acme)).status,
      401,
    );
    const missing = await call(stack, 'DELETE', `/api/admin/calls/${newCallSid()}/recording`, admin);
    assert.equal(missing.status, 404);
    const malformed = await call(stack, 'DELETE', '/api/admin/calls/CAnope/recording', admin);
    assert.equal(malformed.json().error.code, 'RECGATE_INVALID_CALL_SID');
    assert.equal((await stack.gateway.callLog.get(pair.parent))?.purgedAt, null);
  });

  it('a recording Twilio reports deleted is removed from disk', async () => {
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 200);
    assert.deepEqual(await settled(stack, pair.parent), finishedNames(pair.parent));
    const removed = 'recgate_recordings_removed_total{reason="upstream_deleted"}';
    const removedBefore = await metric(stack, removed);
    await webhook(stack, {
      CallSid: pair.parent,
      RecordingSid: pair.recordingSid,
      RecordingStatus: 'deleted',
    });
    assert.deepEqual(await files(stack, pair.parent), []);
    assert.equal(await metric(stack, removed), removedBefore + 1, 'the removal is counted');
    const gone = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme);
    assert.equal(gone.json().error.code, 'RECGATE_RECORDING_GONE');
  });

  it('a 404 on a variant removes every local copy of a recording deleted at Twilio, and nothing fetches it again', async () => {
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.child}/download`, acme)).status, 200);
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.child}/peaks`, acme)).status, 200);
    const withPeaks = [...finishedNames(pair.parent), `${pair.parent}.peaks.json`].sort();
    await until(
      "the parent's files with peaks",
      async () => (await files(stack, pair.parent)).join() === withPeaks.join(),
    );
    await deleteAtTwilio(stack, pair.recordingSid);
    const removedBefore = await metric(stack, UPSTREAM_DELETED);

    // The child plays its parent's recording: the parent's files are the ones that go.
    const wav = await call(stack, 'GET', `/api/calls/${pair.child}/download?format=wav`, acme);
    assert.equal(wav.status, 404);
    assert.equal(wav.json().error.code, 'RECGATE_RECORDING_GONE');
    assert.deepEqual(await files(stack, pair.parent), [], 'no file of the recording is left');
    assert.equal(await metric(stack, UPSTREAM_DELETED), removedBefore + 1, 'counted as the webhook is');
    const fetched = mediaRequests(stack, pair.recordingSid);
    const gone = await call(stack, 'GET', `/api/calls/${pair.child}/download`, acme);
    assert.equal(gone.status, 404);
    assert.equal(gone.json().error.code, 'RECGATE_RECORDING_GONE');
    // The parent never played: its first lookup finds no recording at Twilio any more.
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 404);
    assert.equal(mediaRequests(stack, pair.recordingSid), fetched, 'no media request after the 404');
  });

  it("a HEAD's 404 at Twilio removes the local copies too", async () => {
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 200);
    assert.deepEqual(await settled(stack, pair.parent), finishedNames(pair.parent));
    await deleteAtTwilio(stack, pair.recordingSid);
    const head = await request(`${stack.url}/api/calls/${pair.parent}/download?format=wav`, {
      method: 'HEAD',
      headers: acme,
    });
    await head.body.dump();
    assert.equal(head.statusCode, 404);
    assert.deepEqual(await files(stack, pair.parent), []);
  });

  it('a 404 for one recording leaves a file of the same call that holds another', async () => {
    const callSid = newCallSid();
    const created = await stack.emulator.createRecording({ call_sid: callSid, bytes: 8_000 });
    const deleted = created.recording_sid as RecordingSid;
    await stack.register({ businessId: 'acme', callSid, recordingSid: deleted });
    const other = `RE${randomBytes(16).toString('hex')}`;
    const dir = path.join(stack.dataDir, 'recordings');
    await storeRecording(dir, callSid, other, randomBytes(2_000), new Date('2024-01-02T03:04:05Z'));
    await deleteAtTwilio(stack, deleted);
    const wav = await call(stack, 'GET', `/api/calls/${callSid}/download?format=wav`, acme);
    assert.equal(wav.json().error.code, 'RECGATE_RECORDING_GONE');
    assert.deepEqual(await files(stack, callSid), finishedNames(callSid), 'the other recording stays');
  });

  it('every play is audited with the bytes the client took, and an admin can list who listened', async () => {
    const pair = await dial(stack, 'acme');
    const logged = 'recgate_audit_plays_total{outcome="logged"}';
    const stored = 'recgate_audit_plays_total{outcome="stored"}';
    // Earlier cases' plays are written in the background, a batch a second: first let them all be written.
    const caughtUp = async () => (await metric(stack, stored)) === (await metric(stack, logged));
    for (let i = 0; i < 100 && !(await caughtUp()); i++) await sleep(50);
    assert.ok(await caughtUp(), 'every earlier play was stored');
    const [loggedBefore, storedBefore] = [await metric(stack, logged), await metric(stack, stored)];
    const full = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, {
      ...acme,
      'x-request-id': 'audit-full',
    });
    assert.equal(full.status, 200);
    const ranged = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, {
      ...acme,
      range: 'bytes=100-1099',
      'x-request-id': 'audit-range',
    });
    assert.equal(ranged.status, 206);
    const head = await request(`${stack.url}/api/calls/${pair.parent}/download`, {
      method: 'HEAD',
      headers: acme,
    });
    await head.body.dump();
    let plays: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100 && plays.length < 2; i++) {
      await sleep(100);
      plays = (await call(stack, 'GET', `/api/admin/calls/${pair.parent}/plays`, admin)).json().plays;
    }
    // One log line per play, written when its response closed: HEAD is none.
    const lines = log.records
      .filter((l) => l.event === 'play' && l.callSid === pair.parent)
      .map(({ businessId, callSid, recordingSid, bytes, status, requestId }) => ({
        businessId,
        callSid,
        recordingSid,
        bytes,
        status,
        requestId,
      }))
      .sort((a, b) => String(a.requestId).localeCompare(String(b.requestId)));
    assert.deepEqual(lines, [
      {
        businessId: 'acme',
        callSid: pair.parent,
        recordingSid: pair.recordingSid,
        bytes: pair.size,
        status: 200,
        requestId: 'audit-full',
      },
      {
        businessId: 'acme',
        callSid: pair.parent,
        recordingSid: pair.recordingSid,
        bytes: 1000,
        status: 206,
        requestId: 'audit-range',
      },
    ]);
    assert.equal(await metric(stack, logged), loggedBefore + 2, 'both plays counted as logged');
    // Counted once the batch holding them is written, which the listing above may see a moment before.
    for (let i = 0; i < 100 && (await metric(stack, stored)) < storedBefore + 2; i++) await sleep(50);
    assert.equal(await metric(stack, stored), storedBefore + 2, 'both plays counted as stored');
    assert.deepEqual(
      plays.map(({ played_at, ...rest }) => rest),
      [
        {
          business_id: 'acme',
          call_sid: pair.parent,
          recording_sid: pair.recordingSid,
          bytes: 1000,
          status: 206,
          request_id: 'audit-range',
        },
        {
          business_id: 'acme',
          call_sid: pair.parent,
          recording_sid: pair.recordingSid,
          bytes: pair.size,
          status: 200,
          request_id: 'audit-full',
        },
      ],
      'newest first; HEAD is no play',
    );
    assert.equal((await call(stack, 'GET', `/api/admin/calls/${pair.parent}/plays`, acme)).status, 401);
    const paged = (await call(stack, 'GET', `/api/admin/calls/${pair.parent}/plays?limit=1`, admin)).json();
    assert.equal(paged.plays.length, 1);
    assert.equal(typeof paged.next_cursor, 'string');
    const bad = await call(stack, 'GET', `/api/admin/calls/${pair.parent}/plays?limit=0`, admin);
    assert.equal(bad.status, 400);
  });
});

describe('--keep-after-upstream-delete', () => {
  it('keeps the local copy of a recording Twilio reports deleted, and still never serves it', async (t) => {
    const stack = await startStack({ config: { keepAfterUpstreamDelete: true } });
    t.after(() => stack.close());
    const acme = { authorization: `Bearer ${await stack.token('acme')}` };
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 200);
    assert.deepEqual(await settled(stack, pair.parent), finishedNames(pair.parent));
    await webhook(stack, {
      CallSid: pair.parent,
      RecordingSid: pair.recordingSid,
      RecordingStatus: 'deleted',
    });
    assert.deepEqual(await files(stack, pair.parent), finishedNames(pair.parent));
    const gone = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme);
    assert.equal(gone.json().error.code, 'RECGATE_RECORDING_GONE');
  });

  it('keeps the local copies after a 404 at Twilio too, and never serves them nor asks Twilio again', async (t) => {
    const stack = await startStack({ config: { keepAfterUpstreamDelete: true } });
    t.after(() => stack.close());
    const acme = { authorization: `Bearer ${await stack.token('acme')}` };
    const pair = await dial(stack, 'acme');
    assert.equal((await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme)).status, 200);
    assert.deepEqual(await settled(stack, pair.parent), finishedNames(pair.parent));
    await deleteAtTwilio(stack, pair.recordingSid);
    const wav = await call(stack, 'GET', `/api/calls/${pair.parent}/download?format=wav`, acme);
    assert.equal(wav.json().error.code, 'RECGATE_RECORDING_GONE');
    assert.deepEqual(await files(stack, pair.parent), finishedNames(pair.parent));
    const fetched = mediaRequests(stack, pair.recordingSid);
    const gone = await call(stack, 'GET', `/api/calls/${pair.parent}/download`, acme);
    assert.equal(gone.status, 404);
    assert.equal(gone.json().error.code, 'RECGATE_RECORDING_GONE');
    assert.equal(mediaRequests(stack, pair.recordingSid), fetched);
  });
});
