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
  /**
   * A fresh locker on fresh state (a new directory, a new database schema…), with a short heartbeat, and
   * `breakHold`, which takes the lock of `id` away from its holder the way the backend can lose it (the
   * holder's database session is terminated, its lock file unlinked).
   */
  create(t: {
    after(fn: () => void | Promise<void>): void;
  }): Promise<{ locker: Locker; childConfig: unknown; breakHold(id: string): Promise<void> }>;
  /** Tokens are decimal integers that grow with every acquisition (PostgreSQL's generations). */
  orderedTokens: boolean;
}

function lockId(): string {
  return `CA${hex32()}`;
}

function assertCode(code: string): (err: unknown) => true {
  return (err) => {
    assert.ok(isRecgateError(err), `expected a RecgateError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

const assertLockTimeout = assertCode('RECGATE_LOCK_TIMEOUT');
export const assertLockLost = assertCode('RECGATE_LOCK_LOST');

/**
 * Resolves when `signal` aborts; fails after `boundMs`, a bound meant to be generous, not a measurement. Its
 * timer keeps the event loop alive, since the heartbeats' timers do not.
 */
export async function abortedWithin(signal: AbortSignal, boundMs: number): Promise<void> {
  if (signal.aborted) return;
  await new Promise<void>((resolve, reject) => {
    const bound = setTimeout(() => reject(new Error(`lost did not abort within ${boundMs} ms`)), boundMs);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(bound);
        resolve();
      },
      { once: true },
    );
  });
}

function assertLater(backend: LockBackend, later: string | undefined, earlier: string | undefined): void {
  assert.equal(typeof later, 'string');
  assert.equal(typeof earlier, 'string');
  assert.notEqual(later, earlier);
  if (backend.orderedTokens) {
    assert.ok(BigInt(later!) > BigInt(earlier!), `token ${later} is greater than ${earlier}`);
  }
}

export function lockContractTests(name: string, backend: LockBackend): void {
  describe(`Locker contract: ${name}`, () => {
    it('matches interface', async (t) => {
      const { locker } = await backend.create(t);
      assert.equal(typeof locker.newLock, 'function');
      const lock = locker.newLock(lockId());
      for (const method of ['lock', 'tryLock', 'unlock', 'verify'] as const)
        assert.equal(typeof lock[method], 'function');
      assert.ok(lock.lost instanceof AbortSignal);
      assert.equal(lock.lost.aborted, false);
      assert.equal(lock.token, undefined);
    });

    it('gives each hold a fresh lost signal and token; unlock aborts neither, verify passes only while held', async (t) => {
      const { locker } = await backend.create(t);
      const lock = locker.newLock(lockId());
      await assert.rejects(lock.verify(), assertLockLost, 'verify before any hold');
      assert.equal(await lock.tryLock(), true);
      const first = lock.lost;
      const firstToken = lock.token;
      assert.equal(typeof firstToken, 'string');
      assert.equal(first.aborted, false);
      await lock.verify();
      await lock.verify();
      await lock.unlock();
      assert.equal(first.aborted, false, 'unlock does not abort lost');
      assert.equal(lock.lost.aborted, false);
      assert.equal(lock.token, undefined);
      await assert.rejects(lock.verify(), assertLockLost, 'verify after unlock');
      await lock.lock(AbortSignal.timeout(1000));
      assert.notEqual(lock.lost, first, 'a fresh signal per hold');
      assert.equal(lock.lost.aborted, false);
      assertLater(backend, lock.token, firstToken);
      await lock.verify();
      await lock.unlock();
    });

    it('tokens of successive holders differ (and grow where the backend orders them)', async (t) => {
      const { locker } = await backend.create(t);
      const id = lockId();
      let previous: string | undefined;
      for (let i = 0; i < 4; i++) {
        const lock = locker.newLock(id);
        await lock.lock(AbortSignal.timeout(1000));
        if (previous !== undefined) assertLater(backend, lock.token, previous);
        previous = lock.token;
        await lock.unlock();
      }
    });

    it('a broken hold aborts lost and fails verify; the next holder is left alone by the old unlock', async (t) => {
      const { locker, breakHold } = await backend.create(t);
      const id = lockId();
      const a = locker.newLock(id);
      await a.lock(AbortSignal.timeout(1000));
      const lost = a.lost;
      const token = a.token;
      await breakHold(id);
      await abortedWithin(lost, 10_000);
      assertLockLost(lost.reason);
      await assert.rejects(a.verify(), assertLockLost);
      const b = locker.newLock(id);
      await b.lock(AbortSignal.timeout(10_000));
      assertLater(backend, b.token, token);
      await assert.rejects(a.verify(), assertLockLost, 'still lost once another handle holds the lock');
      assert.equal(a.token, token, 'the lost hold keeps its token until unlock');
      await a.unlock();
      assert.equal(a.token, undefined);
      assert.equal(b.lost.aborted, false);
      await b.verify();
      assert.equal(await locker.newLock(id).tryLock(), false, "the old holder's unlock did not free it");
      assert.equal(await a.tryLock(), false);
      await b.unlock();
      assert.equal(await a.tryLock(), true, 'the old handle can lock again');
      assert.notEqual(a.lost, lost);
      assert.equal(a.lost.aborted, false);
      await a.unlock();
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
      const { token } = await child.next('locked');
      const lock = locker.newLock(id);
      assert.equal(await lock.tryLock(), false);
      const waiting = lock.lock(AbortSignal.timeout(10_000));
      await sleep(50);
      child.send({ cmd: 'unlock' });
      await waiting;
      assertLater(backend, lock.token, token as string);
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
