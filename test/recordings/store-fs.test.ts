import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { it } from 'node:test';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import { hex32, tempDir } from './helpers.js';
import { storeContractTests } from './store-contract.js';

storeContractTests('fs', {
  async create(t) {
    const dir = tempDir(t);
    return [new FsRecordingStore({ dir }), new FsRecordingStore({ dir })];
  },
});

it('fs store: does not resume a partial written in another boot, and ignores a torn sidecar', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const writer = await store.beginPartial(id, {
    recordingSid: `RE${hex32()}`,
    size: 10,
    etag: null,
    lastModified: null,
    acceptsRanges: true,
    startedAt: new Date().toISOString(),
  });
  await writer.append(Buffer.alloc(5));
  await writer.close();
  const metaPath = store.metaPath(id);
  const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
  writeFileSync(metaPath, JSON.stringify({ ...meta, bootId: 'another-boot' }));
  assert.equal(await store.resumePartial(id), undefined);
  writeFileSync(metaPath, '{"recordingSid":');
  assert.equal(await store.readMeta(id), undefined);
  assert.equal(await store.resumePartial(id), undefined);
});

it('fs store: lays files out as {id}.mp3, .{id}.mp3.part/.meta/.frontier/.blocks and rejects path-like ids', () => {
  const store = new FsRecordingStore({ dir: '/data/recordings' });
  const id = `CA${'a'.repeat(32)}`;
  assert.equal(store.finalPath(id), `/data/recordings/${id}.mp3`);
  assert.equal(store.partPath(id), `/data/recordings/.${id}.mp3.part`);
  assert.equal(store.metaPath(id), `/data/recordings/.${id}.mp3.meta`);
  assert.equal(store.frontierPath(id), `/data/recordings/.${id}.mp3.frontier`);
  assert.equal(store.blocksPath(id), `/data/recordings/.${id}.mp3.blocks`);
  assert.throws(() => store.finalPath('../x'), /recording id/);
});

it('fs store: a torn frontier line is not trusted; a torn last block-map line is left for the next read', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const writer = await store.beginPartial(id, {
    recordingSid: `RE${hex32()}`,
    size: 100,
    etag: '"e"',
    lastModified: null,
    acceptsRanges: true,
    startedAt: new Date().toISOString(),
  });
  await writer.append(Buffer.alloc(20));
  assert.equal(await store.readFrontier(id, writer.fileId), 20);
  writeFileSync(store.frontierPath(id), `${writer.fileId} 0000000000000090 0000000000000020\n`);
  assert.equal(await store.readFrontier(id, writer.fileId), undefined);
  const header = { fileId: writer.fileId, size: 100, etag: '"e"', lastModified: null };
  assert.equal(await store.appendBlockMap(id, header, [{ t: 'have', start: 50, end: 60 }]), true);
  writeFileSync(store.blocksPath(id), `${readFileSync(store.blocksPath(id), 'utf8')}{"t":"have","sta`);
  assert.deepEqual((await store.readBlockMap(id))?.records, [{ t: 'have', start: 50, end: 60 }]);
  await writer.close();
});
