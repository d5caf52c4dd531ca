/**
 * The contract every {@link Admission} must pass: the cap, the queue fair across businesses, its bounds
 * (depth and wait), and waiters that leave. A backend's test file calls {@link admissionContractTests} with a
 * factory.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRecgateError } from '../../src/errors.js';
import type { Admission, AdmissionPermit } from '../../src/recordings/admission/admission.js';

type T = { after(fn: () => void | Promise<void>): void };

export interface AdmissionSettings {
  concurrency: number;
  maxQueue: number;
  timeoutMs: number;
}

/** Makes an admission with these settings (for a shared backend, on fresh shared state), closed after `t`. */
export type AdmissionFactory = (t: T, settings: AdmissionSettings) => Promise<Admission>;

const DEFAULTS: AdmissionSettings = { concurrency: 2, maxQueue: 1000, timeoutMs: 10_000 };

function assertBusy(err: unknown): true {
  assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
  assert.equal(err.code, 'RECGATE_UPSTREAM_BUSY');
  assert.equal(err.statusCode, 503);
  assert.match(err.headers['retry-after'] ?? '', /^[1-9]\d*$/);
  return true;
}

/** Lets queued grants (and a backend's polling) happen. */
async function settle(ms = 0): Promise<void> {
  await sleep(ms);
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Records which waiters got a permit, in order. */
function track(admission: Admission, business: string, label: string, order: string[], signal?: AbortSignal) {
  let permit: AdmissionPermit | undefined;
  const promise = admission.acquire(business, signal).then((p) => {
    permit = p;
    order.push(label);
    return p;
  });
  promise.catch(() => undefined);
  return { promise, permit: () => permit };
}

export function admissionContractTests(name: string, create: AdmissionFactory, pollMs = 0): void {
  describe(`${name}: Admission contract`, () => {
    it('matches interface', async (t) => {
      const admission = await create(t, DEFAULTS);
      for (const method of ['acquire', 'stats', 'close'] as const) {
        assert.equal(typeof admission[method], 'function', method);
      }
      assert.deepEqual(admission.stats(), { active: 0, queued: 0 });
    });

    it('grants up to the cap at once, queues the rest, and a release lets the next in', async (t) => {
      const admission = await create(t, DEFAULTS);
      const a = await admission.acquire('biz-a');
      const b = await admission.acquire('biz-a');
      const order: string[] = [];
      const third = track(admission, 'biz-a', 'third', order);
      await settle(pollMs * 3);
      assert.deepEqual(order, []);
      assert.deepEqual(admission.stats(), { active: 2, queued: 1 });
      a.release();
      a.release(); // twice frees one slot only
      await third.promise;
      assert.deepEqual(admission.stats(), { active: 2, queued: 0 });
      b.release();
      third.permit()!.release();
      await settle(pollMs);
      assert.deepEqual(admission.stats(), { active: 0, queued: 0 });
    });

    it("serves another business's single request at the next turnover, before a backlog of 300", async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1 });
      const first = await admission.acquire('biz-a');
      const order: string[] = [];
      const backlog = Array.from({ length: 300 }, (_, i) => track(admission, 'biz-a', `a${i}`, order));
      await settle();
      const click = track(admission, 'biz-b', 'b', order);
      await settle();
      first.release();
      await Promise.race([click.promise, backlog[0]!.promise]);
      assert.deepEqual(order, ['b'], 'the other business goes first');
      click.permit()!.release();
      await backlog[0]!.promise;
      assert.deepEqual(order, ['b', 'a0']);
      // The rest of the backlog drains in order.
      for (let i = 0; i < backlog.length; i++) {
        const permit = await backlog[i]!.promise;
        permit.release();
      }
      assert.equal(order.length, 301);
    });

    it('alternates between two backlogs', async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1 });
      const first = await admission.acquire('biz-x');
      const order: string[] = [];
      const waiters = new Map(
        ['a0', 'a1', 'a2', 'b0', 'b1', 'b2'].map((label) => [
          label,
          track(admission, `biz-${label[0]}`, label, order),
        ]),
      );
      await settle();
      first.release();
      for (let i = 0; i < waiters.size; i++) {
        while (order.length <= i) await settle(pollMs);
        assert.equal(order.length, i + 1, 'one grant per release');
        waiters.get(order[i]!)!.permit()!.release();
      }
      assert.deepEqual(order, ['a0', 'b0', 'a1', 'b1', 'a2', 'b2']);
    });

    it('refuses with RECGATE_UPSTREAM_BUSY beyond the queue depth, but never another business', async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1, maxQueue: 3 });
      const held = await admission.acquire('biz-a');
      const order: string[] = [];
      const queued = Array.from({ length: 3 }, (_, i) => track(admission, 'biz-a', `a${i}`, order));
      await settle();
      await assert.rejects(admission.acquire('biz-a'), assertBusy);
      // A business with fewer places pushes out the newest waiter of the one with the most.
      const other = track(admission, 'biz-b', 'b', order);
      await assert.rejects(queued[2]!.promise, assertBusy);
      assert.equal(admission.stats().queued, 3);
      held.release();
      await other.promise;
      other.permit()!.release();
      (await queued[0]!.promise).release();
      (await queued[1]!.promise).release();
      assert.deepEqual(order, ['b', 'a0', 'a1']);
    });

    it('refuses with RECGATE_UPSTREAM_BUSY after waiting the timeout', async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1, timeoutMs: 150 });
      const held = await admission.acquire('biz-a');
      await assert.rejects(admission.acquire('biz-b'), assertBusy);
      assert.equal(admission.stats().queued, 0);
      held.release();
      const next = await admission.acquire('biz-b');
      next.release();
    });

    it('a waiter whose signal aborts leaves the queue and takes no slot', async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1 });
      const held = await admission.acquire('biz-a');
      const abort = new AbortController();
      const order: string[] = [];
      const leaving = track(admission, 'biz-b', 'leaving', order, abort.signal);
      const staying = track(admission, 'biz-c', 'staying', order);
      await settle();
      assert.equal(admission.stats().queued, 2);
      const reason = new Error('client went away');
      abort.abort(reason);
      await assert.rejects(leaving.promise, (err) => err === reason);
      assert.equal(admission.stats().queued, 1);
      held.release();
      (await staying.promise).release();
      assert.deepEqual(order, ['staying']);
      await assert.rejects(admission.acquire('biz-d', AbortSignal.abort(reason)), (err) => err === reason);
    });

    it('close refuses waiters with RECGATE_SHUTTING_DOWN', async (t) => {
      const admission = await create(t, { ...DEFAULTS, concurrency: 1 });
      const held = await admission.acquire('biz-a');
      const waiting = admission.acquire('biz-b');
      waiting.catch(() => undefined);
      await settle();
      await admission.close();
      await assert.rejects(waiting, (err) => isRecgateError(err) && err.code === 'RECGATE_SHUTTING_DOWN');
      held.release();
    });
  });
}
