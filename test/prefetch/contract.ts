/**
 * The contract every {@link PrefetchQueue} backend passes; a backend's test calls {@link prefetchQueueContract}
 * with a factory opening two queue instances (two processes, or two hosts) on one fresh, migrated database.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PrefetchQueue } from '../../src/prefetch/queue.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';

export interface PrefetchSubject {
  queues: [PrefetchQueue, PrefetchQueue];
  cleanup(): Promise<void>;
}

const sid = <T extends string>(prefix: string) => `${prefix}${randomBytes(16).toString('hex')}` as T;
const job = () => ({
  recordingSid: sid<RecordingSid>('RE'),
  callSid: sid<CallSid>('CA'),
  businessId: 'biz-a',
});

export function prefetchQueueContract(name: string, make: () => Promise<PrefetchSubject>): void {
  async function open(t: TestContext) {
    const subject = await make();
    t.after(async () => {
      for (const q of subject.queues) await q.close();
      await subject.cleanup();
    });
    return subject.queues;
  }

  describe(`PrefetchQueue contract: ${name}`, () => {
    test('queued jobs are claimed once, oldest first, and complete', async (t) => {
      const [q] = await open(t);
      const jobs = [job(), job(), job()];
      for (const j of jobs) {
        await q.enqueue(j);
        await sleep(5);
      }
      assert.deepEqual(await q.depth(), { queued: 3, running: 0, failed: 0 });
      // The two due first, in whatever order the claim returns them.
      const claimed = (await q.claim(2, 60_000)).sort(
        (x, y) =>
          jobs.findIndex((j) => j.recordingSid === x.recordingSid) -
          jobs.findIndex((j) => j.recordingSid === y.recordingSid),
      );
      assert.deepEqual(
        claimed.map((c) => c.recordingSid),
        jobs.slice(0, 2).map((j) => j.recordingSid),
      );
      assert.deepEqual(
        claimed.map(({ state, attempts, callSid, businessId }) => ({ state, attempts, callSid, businessId })),
        jobs
          .slice(0, 2)
          .map((j) => ({ state: 'running', attempts: 1, callSid: j.callSid, businessId: 'biz-a' })),
      );
      assert.equal((await q.claim(5, 60_000)).length, 1, 'running jobs are not claimed again');
      assert.deepEqual(await q.claim(5, 60_000), []);
      await q.complete(jobs[0]!.recordingSid);
      assert.equal((await q.get(jobs[0]!.recordingSid))?.state, 'done');
      assert.deepEqual(await q.depth(), { queued: 0, running: 2, failed: 0 });
    });

    test('a retry waits its delay; a failure stays failed with its error; enqueue revives either', async (t) => {
      const [q] = await open(t);
      const [a, b] = [job(), job()];
      await q.enqueue(a);
      await q.enqueue(b);
      await q.claim(2, 60_000);
      await q.retry(a.recordingSid, 'RECGATE_UPSTREAM_UNAVAILABLE: down', 150);
      await q.fail(b.recordingSid, `RECGATE_RECORDING_GONE: ${'x'.repeat(2000)}`);
      assert.deepEqual(await q.claim(5, 60_000), [], 'not before the delay');
      await sleep(200);
      const [again] = await q.claim(5, 60_000);
      assert.equal(again?.recordingSid, a.recordingSid);
      assert.equal(again?.attempts, 2);
      assert.equal(again?.lastError, 'RECGATE_UPSTREAM_UNAVAILABLE: down');
      const failed = await q.get(b.recordingSid);
      assert.equal(failed?.state, 'failed');
      assert.ok(failed!.lastError!.length <= 500, 'long errors are cut');
      assert.deepEqual(await q.depth(), { queued: 0, running: 1, failed: 1 });
      await q.enqueue(b);
      assert.deepEqual(
        { ...(await q.get(b.recordingSid)), runAfter: '' },
        { ...b, state: 'queued', attempts: 0, lastError: null, runAfter: '' },
      );
      await q.enqueue(a);
      assert.equal((await q.get(a.recordingSid))?.state, 'running', 'a running job is left alone');
    });

    test('a claim whose lease ended is claimed again (its worker died)', async (t) => {
      const [q, other] = await open(t);
      const a = job();
      await q.enqueue(a);
      assert.equal((await q.claim(1, 100)).length, 1);
      assert.deepEqual(await other.claim(1, 60_000), []);
      await sleep(150);
      const [taken] = await other.claim(1, 60_000);
      assert.equal(taken?.recordingSid, a.recordingSid);
      assert.equal(taken?.attempts, 2);
    });

    test('concurrent claims from two instances never share a job', async (t) => {
      const [q, other] = await open(t);
      const jobs = Array.from({ length: 60 }, job);
      for (const j of jobs) await q.enqueue(j);
      const seen: string[] = [];
      const drain = async (queue: PrefetchQueue) => {
        for (;;) {
          const claimed = await queue.claim(4, 60_000);
          if (claimed.length === 0) return;
          seen.push(...claimed.map((c) => c.recordingSid));
        }
      };
      await Promise.all([drain(q), drain(other), drain(q), drain(other)]);
      assert.equal(seen.length, jobs.length);
      assert.equal(new Set(seen).size, jobs.length);
    });

    test('refuses malformed jobs', async (t) => {
      const [q] = await open(t);
      await assert.rejects(q.enqueue({ ...job(), callSid: 'CAnope' as CallSid }));
      await assert.rejects(q.enqueue({ ...job(), recordingSid: 'nope' as RecordingSid }));
      await assert.rejects(q.enqueue({ ...job(), businessId: '' }));
      assert.deepEqual(await q.depth(), { queued: 0, running: 0, failed: 0 });
    });
  });
}
