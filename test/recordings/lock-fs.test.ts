import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { FsLocker } from '../../src/recordings/lock/fs.js';
import { tempDir } from './helpers.js';
import { lockContractTests } from './lock-contract.js';

lockContractTests('fs (fs-native-extensions)', {
  async create(t) {
    const dir = tempDir(t);
    return { locker: new FsLocker({ dir, pollIntervalMs: 5 }), childConfig: { backend: 'fs', dir } };
  },
});

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

it('fs locker: validates options and ids', () => {
  assert.throws(() => new FsLocker({ dir: '' }), /options\.dir/);
  assert.throws(() => new FsLocker({ dir: '/tmp', pollIntervalMs: 0 }), /options\.pollIntervalMs/);
  assert.throws(() => new FsLocker({ dir: '/tmp' }).newLock('../etc'), /lock id/);
});
