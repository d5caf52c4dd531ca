import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { it, type TestContext } from 'node:test';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import type { PartialMetaInput, PartialWriter } from '../../src/recordings/store/store.js';
import { hex32, syncCallsOff, tempDir } from './helpers.js';
import { storeContractTests } from './store-contract.js';

/** Two stores on one directory; `prepare` runs first in each case. */
function fsStores(prepare: () => void = () => undefined): Parameters<typeof storeContractTests>[1] {
  return {
    revalidateMs: 50,
    async create(t) {
      prepare();
      const dir = tempDir(t);
      return [
        new FsRecordingStore({ dir, finalRevalidateMs: 50 }),
        new FsRecordingStore({ dir, finalRevalidateMs: 50 }),
      ];
    },
  };
}

storeContractTests('fs', fsStores());
// The same contract with the small calls (a new generation's files and pointer, the frontier, the block map)
// made on the thread pool, as after slow synchronous ones.
storeContractTests('fs, synchronous calls off', fsStores(syncCallsOff));

function input(size: number | null): PartialMetaInput {
  return {
    recordingSid: `RE${hex32()}`,
    size,
    etag: '"e"',
    lastModified: null,
    acceptsRanges: true,
    startedAt: new Date().toISOString(),
  };
}

/** A store on a new directory holding one generation of `bytes`, written and not committed. */
async function writtenGeneration(t: TestContext, bytes: Buffer) {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const meta = input(bytes.length);
  const writer = await store.beginPartial(id, meta);
  await writer.append(bytes);
  return { dir, store, id, meta, writer };
}

/** Commits every byte `writer` wrote as `meta`'s recording, then closes it. */
async function commitAll(writer: PartialWriter, meta: PartialMetaInput, mtime = new Date()): Promise<void> {
  await writer.commit({
    expectedSize: meta.size!,
    mtime,
    identity: { recordingSid: meta.recordingSid, etag: meta.etag, lastModified: null },
    fence: async () => undefined,
  });
  await writer.close();
}

it('fs store: tags partials with this boot, and ignores a torn sidecar', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const writer = await store.beginPartial(id, input(10));
  await writer.append(Buffer.alloc(5));
  await writer.close();
  assert.equal((await store.readMeta(id))?.bootId, store.bootId);
  assert.match(store.bootId, /\S/);
  writeFileSync(store.metaPath(id), '{"recordingSid":');
  assert.equal(await store.readMeta(id), undefined);
  writeFileSync(store.metaPath(id), JSON.stringify({ ...input(10), fileId: '../../etc', bootId: 'x' }));
  assert.equal(await store.readMeta(id), undefined, 'a generation id that is not 16 hex digits is refused');
});

it('fs store: lays files out as {id}.mp3, .{id}.mp3.id/.meta and .{id}.mp3.{gen}.part/.frontier/.blocks', () => {
  const store = new FsRecordingStore({ dir: '/data/recordings' });
  const id = `CA${'a'.repeat(32)}`;
  const gen = '0123456789abcdef';
  assert.equal(store.finalPath(id), `/data/recordings/${id}.mp3`);
  assert.equal(store.identityPath(id), `/data/recordings/.${id}.mp3.id`);
  assert.equal(store.metaPath(id), `/data/recordings/.${id}.mp3.meta`);
  assert.equal(store.generationPath(id, gen, 'part'), `/data/recordings/.${id}.mp3.${gen}.part`);
  assert.equal(store.generationPath(id, gen, 'frontier'), `/data/recordings/.${id}.mp3.${gen}.frontier`);
  assert.equal(store.generationPath(id, gen, 'blocks'), `/data/recordings/.${id}.mp3.${gen}.blocks`);
  assert.throws(() => store.finalPath('../x'), /recording id/);
  assert.throws(() => store.generationPath(id, '../x', 'part'), /generation/);
});

it('fs store: a torn frontier line is not trusted; a torn last block-map line is left for the next read', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const writer = await store.beginPartial(id, input(100));
  await writer.append(Buffer.alloc(20));
  assert.equal(await store.readFrontier(id, writer.fileId), 20);
  const frontier = store.generationPath(id, writer.fileId, 'frontier');
  writeFileSync(frontier, `${writer.fileId} 0000000000000090 0000000000000020\n`);
  assert.equal(await store.readFrontier(id, writer.fileId), undefined);
  const header = { fileId: writer.fileId, size: 100, etag: '"e"', lastModified: null };
  assert.equal(await store.appendBlockMap(id, header, [{ t: 'have', start: 50, end: 60 }]), true);
  const blocks = store.generationPath(id, writer.fileId, 'blocks');
  writeFileSync(blocks, `${readFileSync(blocks, 'utf8')}{"t":"have","sta`);
  assert.deepEqual((await store.readBlockMap(id, writer.fileId))?.records, [
    { t: 'have', start: 50, end: 60 },
  ]);
  await writer.close();
});

it('fs store: an identity record that describes another file (or none) gives the file no identity', async (t) => {
  const { dir, store, id, meta, writer } = await writtenGeneration(t, Buffer.from([0xff, 0xfb, 0x90, 0x00]));
  await commitAll(writer, meta, new Date('2025-04-01T10:00:00Z'));
  assert.equal((await store.stat(id))?.identity?.recordingSid, meta.recordingSid);
  // The file replaced by hand (another inode): the record no longer describes it.
  writeFileSync(join(dir, 'other'), Buffer.alloc(4));
  rmSync(store.finalPath(id));
  writeFileSync(store.finalPath(id), Buffer.alloc(4));
  assert.equal((await store.stat(id, { fresh: true }))?.identity, undefined);
  // A file from before identity records existed.
  rmSync(store.identityPath(id));
  assert.equal((await store.stat(id, { fresh: true }))?.identity, undefined);
  assert.equal((await store.openFinal(id))?.info.identity, undefined);
});

it('fs store: sweeps what the old layout and crashed writers left, and temporary files once old', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const old = new Date(Date.now() - 3_600_000);
  const names = [
    `.${id}.mp3.part`,
    `.${id}.mp3.frontier`,
    `.${id}.mp3.blocks`,
    `.${id}.mp3.blocks.0a1b2c3d4e5f`,
    `.${id}.mp3.0123456789abcdef.blocks.tmp-0a1b2c3d4e5f`,
    `.${id}.mp3.meta.tmp-0a1b2c3d4e5f`,
    `.recgate-write-check-123-abcd`,
    `.${id}.mp3.0123456789abcdef.part`,
  ];
  for (const name of names) {
    writeFileSync(join(dir, name), 'x');
    utimesSync(join(dir, name), old, old);
  }
  writeFileSync(join(dir, `${id}.mp3.keep`), 'not ours');
  assert.equal(await store.sweepTemporary(60_000), 4);
  const leftovers = await store.leftovers();
  assert.deepEqual(
    leftovers.map((l) => [l.id, l.current]),
    [[id, false]],
  );
  // A generation no pointer names is removed when the sweep names it, and only then.
  await store.removeLeftovers(id);
  assert.deepEqual(readdirSync(dir).sort(), [`.${id}.mp3.0123456789abcdef.part`, `${id}.mp3.keep`]);
  await store.removeLeftovers(id, leftovers[0]!.names);
  assert.deepEqual(readdirSync(dir), [`${id}.mp3.keep`]);
});

it('fs store: a pointer left by a commit cut short after its rename is no current generation', async (t) => {
  const { dir, store, id, meta, writer } = await writtenGeneration(t, Buffer.alloc(10, 7));
  const frontier = store.generationPath(id, writer.meta.fileId, 'frontier');
  const leftBehind = [store.metaPath(id), frontier].map((path) => [path, readFileSync(path)] as const);
  await commitAll(writer, meta);
  // The process died after the rename, before it removed the pointer (a version before this one also left
  // the frontier there).
  for (const [path, bytes] of leftBehind) writeFileSync(path, bytes);
  assert.deepEqual(
    (await store.leftovers()).map((l) => [l.id, l.current]),
    [[id, false]],
  );
  await store.removeLeftovers(id, (await store.leftovers())[0]!.names);
  assert.deepEqual(readdirSync(dir).sort(), [`.${id}.mp3.id`, `${id}.mp3`]);
  assert.equal((await store.stat(id, { fresh: true }))?.identity?.recordingSid, meta.recordingSid);
});

it('fs store: a pointer or identity record half written aside is a leftover at once, not after a minute', async (t) => {
  const { dir, store, id, meta, writer } = await writtenGeneration(t, Buffer.alloc(4));
  await commitAll(writer, meta);
  // A holder killed while it wrote these aside (young files: sweepTemporary keeps them for a minute). This
  // version writes only the pointer aside; one before 2026-12-03 wrote the identity record aside too.
  writeFileSync(`${store.identityPath(id)}.tmp-0a1b2c3d4e5f`, '{"v":1,');
  writeFileSync(`${store.metaPath(id)}.tmp-0a1b2c3d4e5f`, '{"recordingSid":');
  assert.equal(await store.sweepTemporary(60_000), 0);
  assert.deepEqual(
    (await store.leftovers()).map((l) => [l.id, l.current]),
    [[id, false]],
  );
  await store.removeLeftovers(id, (await store.leftovers())[0]!.names);
  assert.deepEqual(readdirSync(dir).sort(), [`.${id}.mp3.id`, `${id}.mp3`]);
});

it('fs store: recreates a recordings directory removed at run time', async (t) => {
  const parent = tempDir(t);
  const dir = join(parent, 'recordings');
  mkdirSync(dir);
  const store = new FsRecordingStore({ dir });
  rmSync(dir, { recursive: true });
  await store.checkWritable();
  rmSync(dir, { recursive: true });
  const writer = await store.beginPartial(`CA${hex32()}`, input(10));
  assert.equal(writer.length, 0);
  await writer.close();
});

it('fs store: refuses a generation the volume has no room for, before making any file', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  await assert.rejects(
    store.beginPartial(id, input(Number.MAX_SAFE_INTEGER)),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'RECGATE_STORAGE_FULL');
      return true;
    },
  );
  assert.deepEqual(readdirSync(dir), []);
});

it('fs store: a variant key names its own files: {id}.dual.mp3, {id}.wav, {id}.dual.wav and their sidecars', () => {
  const store = new FsRecordingStore({ dir: '/data/recordings' });
  const id = `CA${'a'.repeat(32)}`;
  const gen = '0123456789abcdef';
  assert.equal(store.finalPath(`${id}.dual`), `/data/recordings/${id}.dual.mp3`);
  assert.equal(store.finalPath(`${id}.wav`), `/data/recordings/${id}.wav`);
  assert.equal(store.finalPath(`${id}.dual.wav`), `/data/recordings/${id}.dual.wav`);
  assert.equal(store.identityPath(`${id}.wav`), `/data/recordings/.${id}.wav.id`);
  assert.equal(
    store.generationPath(`${id}.dual`, gen, 'part'),
    `/data/recordings/.${id}.dual.mp3.${gen}.part`,
  );
  assert.equal(store.peaksPath(id), `/data/recordings/${id}.peaks.json`);
  assert.equal(store.peaksPath(`${id}.dual.wav`), `/data/recordings/${id}.dual.wav.peaks.json`);
  for (const bad of [`${id}.ogg`, `${id}.wav.dual`, `${id}.mp3`, `${id}..wav`, `${id}.dual.dual`]) {
    assert.throws(() => store.finalPath(bad), /recording id/, bad);
  }
});

it('fs store: variants are finished files, leftovers and peaks of their own; remove takes the peaks', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const keys = [id, `${id}.dual`, `${id}.wav`, `${id}.dual.wav`];
  for (const key of keys) {
    const writer = await store.beginPartial(key, input(4));
    await writer.append(Buffer.from('abcd'));
    await writer.commit({
      expectedSize: 4,
      mtime: new Date(),
      identity: { recordingSid: writer.meta.recordingSid, etag: null, lastModified: null },
      fence: async () => {},
    });
    await writer.close();
    await store.writePeaks(key, `{"key":"${key}"}`);
  }
  assert.deepEqual((await store.finished()).map((f) => f.id).sort(), [...keys].sort());
  assert.equal(await store.readPeaks(`${id}.wav`), `{"key":"${id}.wav"}`);
  assert.deepEqual(await store.leftovers(), [], 'identity records beside their files are no leftovers');
  // A half-written peaks file of a crashed writer is temporary litter.
  const aside = join(dir, `${id}.wav.peaks.json.tmp-0a1b2c3d4e5f`);
  writeFileSync(aside, '{');
  utimesSync(aside, new Date(0), new Date(0));
  assert.equal(await store.sweepTemporary(60_000), 1);
  // A crashed variant download is a leftover of the variant, not of the canonical file.
  writeFileSync(join(dir, `.${id}.dual.mp3.0123456789abcdef.part`), 'x');
  assert.deepEqual(
    (await store.leftovers()).map((l) => l.id),
    [`${id}.dual`],
  );
  assert.equal(await store.remove(`${id}.wav`), 4);
  assert.equal(await store.readPeaks(`${id}.wav`), undefined);
  // An eviction does not look for generations nobody points at (the sweep takes them); a purge does.
  assert.equal(await store.remove(`${id}.dual`), 4);
  assert.ok(readdirSync(dir).includes(`.${id}.dual.mp3.0123456789abcdef.part`));
  await store.remove(`${id}.dual`, { everyGeneration: true });
  assert.deepEqual(
    readdirSync(dir).sort(),
    [
      `.${id}.dual.wav.id`,
      `.${id}.mp3.id`,
      `${id}.dual.wav`,
      `${id}.dual.wav.peaks.json`,
      `${id}.mp3`,
      `${id}.peaks.json`,
    ].sort(),
  );
});

it('fs store: a read handle closed under pending reads closes once they are done; a read after close is a storage error', async (t) => {
  const dir = tempDir(t);
  const store = new FsRecordingStore({ dir });
  const id = `CA${hex32()}`;
  const bytes = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251));
  const writer = await store.beginPartial(id, input(bytes.length));
  await writer.append(bytes);
  // Many reads in flight on the thread pool, then the close: none may find its descriptor closed.
  const reads = Array.from({ length: 64 }, (_, i) => {
    const buffer = Buffer.alloc(64);
    return writer.read(buffer, 0, 64, i * 64).then((n) => buffer.subarray(0, n));
  });
  const closed = writer.close();
  const got = await Promise.all(reads);
  await closed;
  assert.deepEqual(Buffer.concat(got), bytes);
  await assert.rejects(writer.read(Buffer.alloc(1), 0, 1, 0), { code: 'RECGATE_STORAGE_ERROR' });
});

it('fs store: a commit writes the identity record over the frontier file, so it makes no file of its own', async (t) => {
  const { dir, store, id, meta, writer } = await writtenGeneration(t, Buffer.alloc(10, 7));
  const frontierIno = statSync(store.generationPath(id, writer.meta.fileId, 'frontier')).ino;
  await commitAll(writer, meta);
  assert.equal(statSync(store.identityPath(id)).ino, frontierIno, 'the frontier file became the record');
  assert.deepEqual(readdirSync(dir).sort(), [`.${id}.mp3.id`, `${id}.mp3`]);
  const record = JSON.parse(readFileSync(store.identityPath(id), 'utf8'));
  assert.equal(record.size, 10);
  assert.equal(record.ino, String(statSync(store.finalPath(id)).ino));
  assert.equal((await store.stat(id, { fresh: true }))?.identity?.recordingSid, meta.recordingSid);
});

it('fs store: a frontier file holding its identity record (a crash inside a commit) states the whole size', async (t) => {
  const { store, id, meta, writer } = await writtenGeneration(t, Buffer.alloc(10, 7));
  const fileId = writer.meta.fileId;
  const frontier = store.generationPath(id, fileId, 'frontier');
  assert.equal(await store.readFrontier(id, fileId), 10);
  // What the commit writes over the frontier before it renames it: every byte is written and flushed then,
  // so a follower, or a holder taking over after a crash, finds the download complete.
  const record = {
    v: 1,
    recordingSid: meta.recordingSid,
    etag: meta.etag,
    lastModified: null,
    size: 10,
    ino: '1',
  };
  writeFileSync(frontier, JSON.stringify({ ...record, generation: fileId }));
  assert.equal(await store.readFrontier(id, fileId), 10);
  // Another generation's record, a record without its size, or a read torn between the line and the record
  // state nothing.
  writeFileSync(frontier, JSON.stringify({ ...record, generation: '0123456789abcdef' }));
  assert.equal(await store.readFrontier(id, fileId), undefined);
  writeFileSync(frontier, JSON.stringify({ ...record, size: -1, generation: fileId }));
  assert.equal(await store.readFrontier(id, fileId), undefined);
  writeFileSync(
    frontier,
    `${JSON.stringify({ ...record, generation: fileId }).slice(0, 40)}${fileId} 0000000000000010 0000000000000010\n`,
  );
  assert.equal(await store.readFrontier(id, fileId), undefined);
  await writer.close();
});
