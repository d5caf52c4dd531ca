/**
 * The file-system readings the bench prints (`bench/lib/procfs.ts`) and `bench/fs-create.ts`, run tiny.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { measureCreates } from '../../bench/fs-create.js';
import { describeFileSystem, fileSystemOf } from '../../bench/lib/procfs.js';

test('fileSystemOf names the mount that holds a directory', { skip: process.platform !== 'linux' }, () => {
  const root = fileSystemOf('/');
  assert.ok(root !== undefined && root.type !== '' && root.mountPoint === '/', JSON.stringify(root));
  const proc = fileSystemOf('/proc/self');
  assert.equal(proc?.type, 'proc', 'the longest mount point wins');
  assert.equal(proc?.mountPoint, '/proc');
  // Only ext4 says whether it keeps a journal.
  if (root.type !== 'ext4') assert.equal(root.journal, undefined);
  assert.match(describeFileSystem(fileSystemOf(tmpdir())), /^\S+ \(.+\)$/);
  assert.equal(describeFileSystem(undefined), 'unknown file system');
  assert.equal(
    describeFileSystem({ type: 'tmpfs', source: 'tmpfs', mountPoint: '/dev/shm' }),
    'tmpfs (memory)',
  );
  assert.equal(
    describeFileSystem({ type: 'ext4', source: '/dev/vda', mountPoint: '/', journal: false }),
    'ext4 (/dev/vda, no journal)',
  );
});

test('measureCreates times creates before and after deletions, and leaves nothing behind', async () => {
  const before = (await readdir(tmpdir())).filter((n) => n.startsWith('recgate-fs-create-'));
  const cost = await measureCreates(tmpdir(), 5, 20);
  assert.ok(cost.beforeUs > 0 && Number.isFinite(cost.beforeUs), `before ${cost.beforeUs}`);
  assert.ok(cost.afterUs > 0 && Number.isFinite(cost.afterUs), `after ${cost.afterUs}`);
  const after = (await readdir(tmpdir())).filter((n) => n.startsWith('recgate-fs-create-'));
  assert.deepEqual(after, before);
});
