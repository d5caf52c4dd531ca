/**
 * Which file system a directory is on (`src/io/file-system.ts`), and what an operator is told about it.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { describeFileSystem, fileSystemOf, mountOf, slowCreatesNote } from '../../src/io/file-system.js';

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard',
  '23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw',
  '24 22 0:22 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw',
  '25 22 254:16 / /data rw,relatime shared:4 - xfs /dev/vdb rw',
  '26 22 0:40 / /srv/my\\040recordings rw,relatime shared:5 - nfs4 files:/export\\040one rw',
  '27 25 254:32 / /data/cache rw,relatime shared:6 - ext4 /dev/vdc rw',
  // A second mount on the same point hides the first: the later line is the one in force.
  '28 22 0:41 / /data/cache rw,relatime shared:7 - tmpfs tmpfs rw',
  'not a mountinfo line',
  '',
].join('\n');

test('mountOf picks the mount with the longest mount point that holds the directory', () => {
  assert.equal(mountOf(MOUNTINFO, '/')?.type, 'ext4');
  assert.equal(mountOf(MOUNTINFO, '/var/lib/recgate')?.source, '/dev/vda');
  assert.equal(mountOf(MOUNTINFO, '/proc')?.type, 'proc', 'the mount point itself');
  assert.equal(mountOf(MOUNTINFO, '/data/recordings')?.type, 'xfs');
  // `/database` is not inside `/data`.
  assert.equal(mountOf(MOUNTINFO, '/database')?.type, 'ext4');
  assert.equal(
    mountOf(MOUNTINFO, '/data/cache/recordings')?.type,
    'tmpfs',
    'the later of two mounts on one point',
  );
  assert.deepEqual(mountOf(MOUNTINFO, '/srv/my recordings/r'), {
    type: 'nfs4',
    source: 'files:/export one',
    mountPoint: '/srv/my recordings',
  });
  assert.equal(mountOf('', '/tmp'), undefined);
});

test('fileSystemOf reads this machine, and tells journaled ext4 apart', {
  skip: process.platform !== 'linux',
}, () => {
  const root = fileSystemOf('/');
  assert.ok(root !== undefined && root.mountPoint === '/', JSON.stringify(root));
  assert.equal(root.journal === undefined, root.type !== 'ext4' || !root.source.startsWith('/dev/'));
  assert.equal(fileSystemOf('/proc/self')?.type, 'proc');
  assert.ok(fileSystemOf(tmpdir()) !== undefined);
});

test('describeFileSystem and slowCreatesNote', () => {
  const ext4 = { type: 'ext4', source: '/dev/vda', mountPoint: '/' };
  assert.equal(describeFileSystem(undefined), 'unknown file system');
  assert.equal(
    describeFileSystem({ type: 'tmpfs', source: 'tmpfs', mountPoint: '/dev/shm' }),
    'tmpfs (memory)',
  );
  assert.equal(describeFileSystem({ ...ext4, journal: false }), 'ext4 (/dev/vda, no journal)');
  assert.equal(describeFileSystem({ ...ext4, journal: true }), 'ext4 (/dev/vda, journal)');
  assert.equal(
    describeFileSystem({ type: 'xfs', source: '/dev/vdb', mountPoint: '/data' }),
    'xfs (/dev/vdb)',
  );
  assert.match(slowCreatesNote({ ...ext4, journal: false }) ?? '', /^\/dev\/vda is ext4 without a journal, /);
  assert.equal(slowCreatesNote({ ...ext4, journal: true }), undefined);
  // Unknown (not a block device): nothing to say.
  assert.equal(slowCreatesNote(ext4), undefined);
  assert.equal(slowCreatesNote({ type: 'xfs', source: '/dev/vdb', mountPoint: '/data' }), undefined);
  assert.equal(slowCreatesNote(undefined), undefined);
});
