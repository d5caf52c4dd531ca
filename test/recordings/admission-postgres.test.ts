/**
 * PostgresAdmission on a real PostgreSQL: the Admission contract, and the cap shared by two admissions
 * (two hosts) on one database, whose slots come back when a session dies.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { AdmissionPermit } from '../../src/recordings/admission/admission.js';
import { PostgresAdmission } from '../../src/recordings/admission/postgres.js';
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
