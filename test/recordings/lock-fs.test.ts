import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { FsLocker } from '../../src/recordings/lock/fs.js';
import { hex32, syncCallsOff, tempDir } from './helpers.js';
import { abortedWithin, assertLockLost, type LockBackend, lockContractTests } from './lock-contract.js';

/** The fs backend for the lock contract; `prepare` runs before each case's locker is made. */
function fsBackend(prepare: () => void = () => undefined): LockBackend {
  return {
    orderedTokens: false,
    async create(t) {
      prepare();
      const dir = tempDir(t);
      const locker = new FsLocker({ dir, pollIntervalMs: 5, heartbeatMs: 20 });
      return {
        locker,
        childConfig: { backend: 'fs', dir },
        breakHold: async (id) => unlinkSync(locker.lockPath(id)),
      };
    },
  };
}

lockContractTests('fs (fs-native-extensions)', fsBackend());
// The same contract with the lock file's calls made on the thread pool, as after slow synchronous ones.
lockContractTests('fs (fs-native-extensions), synchronous calls off', fsBackend(syncCallsOff));

it('fs locker: removes its lock file on unlock, and sweep removes stray ones only when free', async (t) => {
  const dir = tempDir(t);
  const locker = new FsLocker({ dir, pollIntervalMs: 5 });
  const id = `CA${'1'.repeat(32)}`;
  const a = locker.newLock(id);
  await a.lock(AbortSignal.timeout(1000));
  assert.deepEqual(readdirSync(dir), [`.${id}.lock`]);
  assert.equal(await locker.sweep(), 0, 'a held lock file stays');
  await a.unlock();
  assert.deepEqual(readdirSync(dir), []);
  writeFileSync(join(dir, `.${id}.lock`), '');
  assert.equal(await locker.sweep(), 1, 'a stray lock file (crashed holder) goes');
  assert.deepEqual(readdirSync(dir), []);
});

it('fs locker: a deleted directory is created again by the next lock, and sweeps as empty', async (t) => {
  const dir = join(tempDir(t), 'recordings');
  mkdirSync(dir);
  const locker = new FsLocker({ dir, pollIntervalMs: 5 });
  const id = `CA${'2'.repeat(32)}`;
  rmSync(dir, { recursive: true });
  assert.equal(await locker.sweep(), 0);
  const a = locker.newLock(id);
  await a.lock(AbortSignal.timeout(1000));
  assert.deepEqual(readdirSync(dir), [`.${id}.lock`]);
  assert.equal(await locker.newLock(id).tryLock(), false, 'the lock on the new file excludes');
  await a.unlock();
  rmSync(dir, { recursive: true });
  assert.equal(await a.tryLock(), true);
  await a.unlock();
});

it('fs locker: removing and recreating the directory under a holder loses the hold', async (t) => {
  const dir = join(tempDir(t), 'recordings');
  mkdirSync(dir);
  const locker = new FsLocker({ dir, pollIntervalMs: 5, heartbeatMs: 20 });
  const id = `CA${hex32()}`;
  const a = locker.newLock(id);
  await a.lock(AbortSignal.timeout(1000));
  rmSync(dir, { recursive: true });
  mkdirSync(dir);
  await abortedWithin(a.lost, 10_000);
  assertLockLost(a.lost.reason);
  assert.match(String((a.lost.reason as Error).cause), /was removed/);
  await assert.rejects(a.verify(), assertLockLost);
  const b = locker.newLock(id);
  assert.equal(await b.tryLock(), true, 'the lost lock no longer excludes');
  await a.unlock();
  assert.deepEqual(readdirSync(dir), [`.${id}.lock`], "the old holder's unlock left the new file alone");
  await b.verify();
  await b.unlock();
});

it('fs locker: verify() finds a replaced lock file by itself, before any heartbeat', async (t) => {
  const dir = tempDir(t);
  const locker = new FsLocker({ dir, pollIntervalMs: 5, heartbeatMs: 600_000 });
  const id = `CA${hex32()}`;
  const a = locker.newLock(id);
  await a.lock(AbortSignal.timeout(1000));
  const path = locker.lockPath(id);
  assert.equal(
    a.token!.split(':')[0],
    String(statSync(path, { bigint: true }).ino),
    'the token names the inode',
  );
  await a.verify();
  unlinkSync(path);
  writeFileSync(path, '');
  assert.equal(a.lost.aborted, false);
  await assert.rejects(a.verify(), assertLockLost);
  assert.equal(a.lost.aborted, true, 'verify aborts lost');
  assert.match(String((a.lost.reason as Error).cause), /was replaced/);
  await a.unlock();
  assert.deepEqual(
    readdirSync(dir),
    [`.${id}.lock`],
    "the file at the path is not the old holder's to remove",
  );
});

it('fs locker: validates options and ids', () => {
  assert.throws(() => new FsLocker({ dir: '' }), /options\.dir/);
  assert.throws(() => new FsLocker({ dir: '/tmp', pollIntervalMs: 0 }), /options\.pollIntervalMs/);
  assert.throws(() => new FsLocker({ dir: '/tmp', heartbeatMs: 0 }), /options\.heartbeatMs/);
  assert.throws(() => new FsLocker({ dir: '/tmp', heartbeatMs: 2.5 }), /options\.heartbeatMs/);
  assert.throws(() => new FsLocker({ dir: '/tmp' }).newLock('../etc'), /lock id/);
});

it('fs locker: a variant key has a lock of its own, apart from the canonical one, and sweeps', async (t) => {
  const dir = tempDir(t);
  const locker = new FsLocker({ dir, pollIntervalMs: 5 });
  const id = `CA${hex32()}`;
  const canonical = locker.newLock(id);
  await canonical.lock(AbortSignal.timeout(1000));
  const dual = locker.newLock(`${id}.dual.wav`);
  assert.equal(await dual.tryLock(), true, 'not excluded by the canonical file’s lock');
  assert.equal(await locker.newLock(`${id}.dual.wav`).tryLock(), false, 'but by its own');
  assert.deepEqual(readdirSync(dir).sort(), [`.${id}.dual.wav.lock`, `.${id}.lock`]);
  await dual.unlock();
  await canonical.unlock();
  writeFileSync(join(dir, `.${id}.wav.lock`), '');
  assert.equal(await locker.sweep(), 1);
  for (const bad of [`${id}.ogg`, `${id}/x`, `${id}.wav.dual`])
    assert.throws(() => locker.newLock(bad), TypeError);
});
