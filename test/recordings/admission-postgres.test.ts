/**
 * PostgresAdmission on a real PostgreSQL: the Admission contract, and the cap shared by two admissions
 * (two hosts) on one database, whose slots come back when a session dies.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { isRecgateError } from '../../src/errors.js';
import type { AdmissionPermit } from '../../src/recordings/admission/admission.js';
import { PostgresAdmission } from '../../src/recordings/admission/postgres.js';
import { until as untilWithin } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { admissionContractTests } from './admission-contract.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;
const POLL_MS = 10;

if (url === undefined) {
  it('PostgreSQL admission', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
} else {
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  after(() => admin.end());
  const newNamespace = () => `test-${randomBytes(8).toString('hex')}`;

  admissionContractTests(
    'PostgresAdmission',
    async (t, settings) => {
      const admission = new PostgresAdmission({
        ...settings,
        connectionString: url,
        slots: settings.concurrency,
        namespace: newNamespace(),
        pollIntervalMs: POLL_MS,
      });
      t.after(() => admission.close());
      return admission;
    },
    POLL_MS,
  );

  // The cap is the global one: each host could run 16, the database allows `concurrency`.
  admissionContractTests(
    'PostgresAdmission with slots below its local concurrency',
    async (t, settings) => {
      const admission = new PostgresAdmission({
        ...settings,
        concurrency: 16,
        connectionString: url,
        slots: settings.concurrency,
        namespace: newNamespace(),
        pollIntervalMs: POLL_MS,
      });
      t.after(() => admission.close());
      return admission;
    },
    POLL_MS,
  );

  it('two admissions on one database share the global cap, and a dead session frees its slot', async (t) => {
    const namespace = newNamespace();
    const host = (name: string) => {
      const admission = new PostgresAdmission({
        concurrency: 3,
        maxQueue: 100,
        timeoutMs: 10_000,
        connectionString: url,
        slots: 3,
        namespace,
        pollIntervalMs: POLL_MS,
      });
      t.after(() => admission.close());
      return { name, admission };
    };
    const hosts = [host('a'), host('b')];
    const held: AdmissionPermit[] = [];
    let active = 0;
    let most = 0;
    const run = async (h: (typeof hosts)[number], i: number) => {
      const permit = await h.admission.acquire(`biz-${i % 4}`);
      active++;
      most = Math.max(most, active);
      await sleep(20);
      active--;
      permit.release();
    };
    await Promise.all(Array.from({ length: 24 }, (_, i) => run(hosts[i % 2]!, i)));
    assert.equal(most, 3, 'never more than the 3 global slots at once, across both hosts');

    // Host a takes every slot; host b waits until a's sessions are terminated.
    for (let i = 0; i < 3; i++) held.push(await hosts[0]!.admission.acquire('biz'));
    let got = false;
    const waiting = hosts[1]!.admission.acquire('biz').then((p) => {
      got = true;
      return p;
    });
    await sleep(POLL_MS * 10);
    assert.equal(got, false);
    await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'recgate-admission' AND pid IN (
          SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted)
        AND pid <> pg_backend_pid()`,
    );
    (await waiting).release();
    for (const permit of held) permit.release();
  });
}

if (url !== undefined) {
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  after(() => admin.end());

  /** Businesses published as waiting, and by how many sessions, over every admission on the server. */
  const published = async () => {
    const { rows } = await admin.query<{ keys: number; sessions: number }>(
      `SELECT count(DISTINCT objid)::int AS keys, count(DISTINCT pid)::int AS sessions FROM pg_locks
        WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted
          AND pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = 'recgate-admission')`,
    );
    return rows[0]!;
  };
  const until = (what: string, check: () => boolean | Promise<boolean>) => untilWithin(what, check, 30_000);

  it("2 slots under a local cap of 16, two hosts: another business's click gets the next slot before either host's backlog", async (t) => {
    const namespace = `test-${randomBytes(8).toString('hex')}`;
    const host = () => {
      const admission = new PostgresAdmission({
        concurrency: 16,
        maxQueue: 1000,
        timeoutMs: 60_000,
        connectionString: url,
        slots: 2,
        namespace,
        pollIntervalMs: POLL_MS,
      });
      t.after(() => admission.close());
      return admission;
    };
    const hosts = [host(), host()];
    const order: string[] = [];
    const permits = new Map<string, AdmissionPermit>();
    const track = (admission: PostgresAdmission, business: string, label: string) => {
      const promise = admission.acquire(business).then((permit) => {
        order.push(label);
        permits.set(label, permit);
      });
      promise.catch(() => undefined);
    };
    for (let i = 0; i < 100; i++) {
      track(hosts[0]!, 'biz-a', `a1-${i}`);
      track(hosts[1]!, 'biz-a', `a2-${i}`);
    }
    await until('both slots taken', () => order.length === 2);
    await until("A's backlog published by both hosts", async () => (await published()).sessions === 2);
    assert.equal(hosts[0]!.stats().active + hosts[1]!.stats().active, 2, 'the global cap, not 16 per host');

    track(hosts[1]!, 'biz-b', 'b');
    await until("B's click published", async () => (await published()).keys === 2);
    permits.get(order[0]!)!.release();
    await until('the next grant', () => order.length === 3);
    assert.equal(order[2], 'b', `the slot went to ${order[2]}, not to B's click`);
    assert.equal(hosts[0]!.stats().active + hosts[1]!.stats().active, 2);

    // Then A's backlog goes on, still two at a time across both hosts.
    for (let turn = 0; turn < 6; turn++) {
      const next = order.length;
      permits.get(order[turn + 1]!)!.release();
      await until('the next grant', () => order.length === next + 1);
      assert.match(order[next]!, /^a/);
      assert.ok(hosts[0]!.stats().active + hosts[1]!.stats().active <= 2);
    }
  });

  it('answers RECGATE_DATABASE_ERROR when PostgreSQL cannot be reached, and the next request tries again', async (t) => {
    const admission = new PostgresAdmission({
      concurrency: 2,
      maxQueue: 10,
      timeoutMs: 10_000,
      // Nothing listens on port 1.
      connectionString: 'postgres://postgres@127.0.0.1:1/test',
      slots: 1,
      pollIntervalMs: POLL_MS,
    });
    t.after(() => admission.close());
    for (let i = 0; i < 2; i++) {
      await assert.rejects(admission.acquire('biz-a'), (err) => {
        assert.ok(isRecgateError(err));
        assert.equal(err.code, 'RECGATE_DATABASE_ERROR');
        assert.match(err.message, /upstream admission/);
        return true;
      });
      assert.deepEqual(admission.stats(), { active: 0, queued: 0 });
    }
  });
}

if (url !== undefined) {
  it('an exclusive advisory lock beside the waiting businesses, with a key beyond int range, is no business', async (t) => {
    const namespace = `test-${randomBytes(8).toString('hex')}`;
    // The key of "a business waits" locks (postgres.ts); -1 shows in pg_locks as objid 4294967295.
    const waitKey =
      createHash('sha256').update(`recgate:upstream-wait:${namespace}`).digest().readUInt32BE(0) & 0x7fffffff;
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    t.after(() => other.end());
    await other.query('SELECT pg_advisory_lock($1::int, -1)', [waitKey]);
    const admission = new PostgresAdmission({
      concurrency: 2,
      maxQueue: 10,
      timeoutMs: 10_000,
      connectionString: url,
      slots: 1,
      namespace,
      pollIntervalMs: POLL_MS,
    });
    t.after(() => admission.close());
    const first = await admission.acquire('biz-a');
    const second = admission.acquire('biz-b');
    first.release();
    (await second).release();
  });
}

if (url !== undefined) {
  it('with no queue (maxQueue 0) a request the caps leave room for is granted, the next one refused at once', async (t) => {
    const admission = new PostgresAdmission({
      concurrency: 16,
      maxQueue: 0,
      timeoutMs: 10_000,
      connectionString: url,
      slots: 1,
      namespace: `test-${randomBytes(8).toString('hex')}`,
      pollIntervalMs: POLL_MS,
    });
    t.after(() => admission.close());
    const held = await admission.acquire('biz-a');
    await assert.rejects(
      admission.acquire('biz-b'),
      (err) => isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_BUSY' && /waiting/.test(err.message),
    );
    held.release();
  });
}
