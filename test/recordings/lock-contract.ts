/**
 * The contract every {@link Locker} backend must pass. A backend's test file calls
 * {@link lockContractTests} with a factory; cross-process cases run a child process that holds the lock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRecgateError } from '../../src/errors.js';
import type { Locker } from '../../src/recordings/lock/lock.js';
import { Child, hex32 } from './helpers.js';

export interface LockBackend {
  /** A fresh locker on fresh state (a new directory, a new database schema…). */
  create(t: {
    after(fn: () => void | Promise<void>): void;
  }): Promise<{ locker: Locker; childConfig: unknown }>;
}

function lockId(): string {
  return `CA${hex32()}`;
}

function assertLockTimeout(err: unknown): true {
  assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
  assert.equal(err.code, 'RECGATE_LOCK_TIMEOUT');
  return true;
}

export function lockContractTests(name: string, backend: LockBackend): void {
  describe(`Locker contract: ${name}`, () => {
    it('matches interface', async (t) => {
      const { locker } = await backend.create(t);
      assert.equal(typeof locker.newLock, 'function');
      const lock = locker.newLock(lockId());
      for (const method of ['lock', 'tryLock', 'unlock'] as const)
        assert.equal(typeof lock[method], 'function');
    });

    it('excludes a second handle until the first unlocks, and can lock again', async (t) => {
      const { locker } = await backend.create(t);
      const id = lockId();
      const a = locker.newLock(id);
      const b = locker.newLock(id);
      assert.equal(await a.tryLock(), true);
      assert.equal(await a.tryLock(), true, 'tryLock on the holder is true');
      assert.equal(await b.tryLock(), false);
      await a.unlock();
      await a.unlock();
      assert.equal(await b.tryLock(), true);
      assert.equal(await a.tryLock(), false);
      await b.unlock();
      await a.lock(AbortSignal.timeout(1000));
      await a.unlock();
    });

    it('keeps different ids independent', async (t) => {
      const { locker } = await backend.create(t);
      const a = locker.newLock(lockId());
      const b = locker.newLock(lockId());
      assert.equal(await a.tryLock(), true);
      assert.equal(await b.tryLock(), true);
      await a.unlock();
      await b.unlock();
    });

    it('lock() waits for the holder to unlock', async (t) => {
      const { locker } = await backend.create(t);
      const id = lockId();
      const a = locker.newLock(id);
      const b = locker.newLock(id);
      await a.lock(AbortSignal.timeout(1000));
      let got = false;
      const waiting = b.lock(AbortSignal.timeout(5000)).then(() => {
        got = true;
      });
      await sleep(100);
      assert.equal(got, false);
      await a.unlock();
      await waiting;
      assert.equal(got, true);
      await b.unlock();
    });

    it('rejects promptly with RECGATE_LOCK_TIMEOUT when the signal aborts, without taking the lock', async (t) => {
      const { locker } = await backend.create(t);
      const id = lockId();
      const a = locker.newLock(id);
      const b = locker.newLock(id);
      await a.lock(AbortSignal.timeout(1000));
      const started = performance.now();
      await assert.rejects(b.lock(AbortSignal.timeout(100)), assertLockTimeout);
      assert.ok(performance.now() - started < 1500, 'rejected promptly');
      const controller = new AbortController();
      controller.abort(new Error('gone'));
      await assert.rejects(b.lock(controller.signal), assertLockTimeout);
      await a.unlock();
      const c = locker.newLock(id);
      assert.equal(await c.tryLock(), true, 'the timed-out waiter does not hold the lock');
      await c.unlock();
    });

    it('lets exactly one of many contenders in at a time', async (t) => {
      const { locker } = await backend.create(t);
      const id = lockId();
      let inside = 0;
      let maxInside = 0;
      let entries = 0;
      await Promise.all(
        Array.from({ length: 12 }, async () => {
          const lock = locker.newLock(id);
          await lock.lock(AbortSignal.timeout(10_000));
          inside++;
          entries++;
          maxInside = Math.max(maxInside, inside);
          await sleep(2);
          inside--;
          await lock.unlock();
        }),
      );
      assert.equal(entries, 12);
      assert.equal(maxInside, 1);
    });

    it('excludes a holder in another process', async (t) => {
      const { locker, childConfig } = await backend.create(t);
      const id = lockId();
      const child = new Child('lock-child.ts', { ...(childConfig as object), id });
      t.after(() => child.kill());
      await child.next('locked');
      const lock = locker.newLock(id);
      assert.equal(await lock.tryLock(), false);
      const waiting = lock.lock(AbortSignal.timeout(10_000));
      await sleep(50);
      child.send({ cmd: 'unlock' });
      await waiting;
      await lock.unlock();
      child.send({ cmd: 'exit' });
      await child.exited;
    });

    it('is released by the backend when the holding process is SIGKILLed', async (t) => {
      const { locker, childConfig } = await backend.create(t);
      const id = lockId();
      const child = new Child('lock-child.ts', { ...(childConfig as object), id });
      t.after(() => child.kill());
      await child.next('locked');
      const lock = locker.newLock(id);
      assert.equal(await lock.tryLock(), false);
      const waiting = lock.lock(AbortSignal.timeout(10_000));
      child.kill('SIGKILL');
      await child.exited;
      await waiting;
      await lock.unlock();
    });
  });
}
