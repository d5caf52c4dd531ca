/**
 * The contract every {@link RecordingStore} backend must pass; a backend's test file calls
 * {@link storeContractTests} with a factory giving two store instances on the same storage.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRecgateError } from '../../src/errors.js';
import type { PartialMetaInput, RecordingStore } from '../../src/recordings/store/store.js';
import { hex32, readAll } from './helpers.js';

export interface StoreBackend {
  /** How long an instance may go on answering from a remembered finished file removed by another. */
  revalidateMs: number;
  /** Two instances on the same fresh storage. */
  create(t: { after(fn: () => void | Promise<void>): void }): Promise<[RecordingStore, RecordingStore]>;
}

function meta(size: number | null): PartialMetaInput {
  return {
    recordingSid: `RE${hex32()}`,
    size,
    etag: '"e1"',
    lastModified: 'Tue, 01 Apr 2025 10:00:00 GMT',
    acceptsRanges: true,
    startedAt: new Date().toISOString(),
  };
}

async function readHandle(
  handle: { read: (b: Buffer, o: number, l: number, p: number) => Promise<number> },
  size: number,
) {
  const buffer = Buffer.alloc(size);
  let got = 0;
  while (got < size) {
    const n = await handle.read(buffer, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return buffer.subarray(0, got);
}

/** Stores a finished recording of `size` bytes of `fill` under `id`. */
async function commitFinal(store: RecordingStore, id: string, fill: number, size = 1000) {
  const input = meta(size);
  const writer = await store.beginPartial(id, input);
  await writer.append(Buffer.alloc(size, fill));
  const info = await writer.commit({
    expectedSize: size,
    mtime: new Date('2025-04-01T10:00:00Z'),
    identity: { recordingSid: input.recordingSid, etag: null, lastModified: null },
    fence: async () => undefined,
  });
  await writer.close();
  return { info, recordingSid: input.recordingSid };
}

export function storeContractTests(name: string, backend: StoreBackend): void {
  describe(`RecordingStore contract: ${name}`, () => {
    it('matches interface', async (t) => {
      const [store] = await backend.create(t);
      assert.equal(typeof store.bootId, 'string');
      for (const method of [
        'stat',
        'createReadStream',
        'openFinal',
        'readMeta',
        'openPartial',
        'readFrontier',
        'beginPartial',
        'discardPartial',
        'openSlice',
        'readBlockMap',
        'appendBlockMap',
        'leftovers',
        'removeLeftovers',
        'sweepTemporary',
        'checkWritable',
        'remove',
      ] as const) {
        assert.equal(typeof store[method], 'function', method);
      }
    });

    it('says miss with undefined', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const gen = '0123456789abcdef';
      assert.equal(await store.stat(id), undefined);
      assert.equal(await store.stat(id, { fresh: true }), undefined);
      assert.equal(await store.openFinal(id), undefined);
      assert.equal(await store.readMeta(id), undefined);
      assert.equal(await store.openPartial(id, gen), undefined);
      assert.equal(await store.readFrontier(id, gen), undefined);
      assert.equal(await store.openSlice(id, gen), undefined);
      assert.equal(await store.readBlockMap(id, gen), undefined);
      await store.discardPartial(id);
      await store.removeLeftovers(id);
      assert.deepEqual(await store.leftovers(), []);
      await store.checkWritable();
      assert.equal(await store.sweepTemporary(0), 0, 'the write check leaves nothing behind');
    });

    it('writes the sidecar before the first byte, and a second instance follows the partial as it grows', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const data = randomBytes(100_000);
      const input = meta(data.length);
      const writer = await a.beginPartial(id, input);
      const seen = await b.readMeta(id);
      assert.ok(seen);
      assert.equal(seen.size, data.length);
      assert.equal(seen.recordingSid, input.recordingSid);
      assert.equal(seen.fileId, writer.fileId);
      assert.equal(seen.bootId, a.bootId);
      assert.equal(await b.readFrontier(id, writer.fileId), 0);
      const reader = await b.openPartial(id, writer.fileId);
      assert.ok(reader);
      assert.equal(reader.fileId, writer.fileId);
      await writer.append(data.subarray(0, 40_000));
      assert.equal(writer.length, 40_000);
      assert.equal(await b.readFrontier(id, writer.fileId), 40_000);
      assert.equal(await reader.size(), 40_000);
      assert.deepEqual(await readHandle(reader, 40_000), data.subarray(0, 40_000));
      await writer.append(data.subarray(40_000));
      assert.equal(await b.stat(id), undefined, 'nothing under the final name before commit');
      const mtime = new Date('2025-04-01T10:00:00Z');
      let fenced = 0;
      const final = await writer.commit({
        expectedSize: data.length,
        mtime,
        identity: { recordingSid: input.recordingSid, etag: '"e1"', lastModified: input.lastModified },
        fence: async () => {
          fenced++;
        },
      });
      assert.equal(fenced, 1, 'the fence runs once, before the rename');
      assert.equal(final.size, data.length);
      assert.deepEqual(final.identity, {
        recordingSid: input.recordingSid,
        etag: '"e1"',
        lastModified: input.lastModified,
        generation: writer.fileId,
      });
      const stat = await b.stat(id);
      assert.equal(stat?.size, data.length);
      assert.equal(stat?.mtime.getTime(), mtime.getTime());
      assert.deepEqual(stat?.identity, final.identity, 'another instance reads the identity beside the file');
      assert.equal(await b.readMeta(id), undefined);
      assert.equal(await b.readFrontier(id, writer.fileId), undefined);
      assert.deepEqual(
        await readHandle(reader, data.length),
        data,
        'a handle on the partial reads on after the rename',
      );
      assert.deepEqual(await readAll(b.createReadStream(id, 10, 99_999)), data.subarray(10));
      assert.deepEqual(await readAll(b.createReadStream(id, 10, 99_999, stat!.fileId)), data.subarray(10));
      const finalHandle = await b.openFinal(id);
      assert.ok(finalHandle);
      assert.deepEqual(finalHandle.info.identity, final.identity);
      assert.deepEqual(await readHandle(finalHandle, data.length), data);
      await Promise.all([reader.close(), writer.close(), finalHandle.close()]);
      assert.deepEqual(await b.leftovers(), []);
    });

    it('a fence that throws stops the commit: nothing is renamed, the error comes back', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const input = meta(10);
      const writer = await store.beginPartial(id, input);
      await writer.append(Buffer.alloc(10, 1));
      const lost = new Error('lock lost');
      await assert.rejects(
        writer.commit({
          expectedSize: 10,
          mtime: new Date(),
          identity: { recordingSid: input.recordingSid, etag: null, lastModified: null },
          fence: async () => {
            throw lost;
          },
        }),
        (err) => err === lost || (err as Error).cause === lost,
      );
      assert.equal(await store.stat(id), undefined);
      assert.equal((await store.readMeta(id))?.fileId, writer.fileId, 'the generation is still there');
      await writer.close();
    });

    it('refuses to commit a partial of the wrong size', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const input = meta(10);
      const writer = await store.beginPartial(id, input);
      await writer.append(Buffer.alloc(7));
      await assert.rejects(
        writer.commit({
          expectedSize: 10,
          mtime: new Date(),
          identity: { recordingSid: input.recordingSid, etag: null, lastModified: null },
          fence: async () => undefined,
        }),
        (err) => isRecgateError(err),
      );
      assert.equal(await store.stat(id), undefined);
      await writer.close();
    });

    it('every generation has its own file: a new one copies a prefix of the old and never shares its bytes', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const data = randomBytes(5000);
      const input = meta(data.length);
      const first = await a.beginPartial(id, input);
      await first.append(data.subarray(0, 3000));
      const oldReader = await a.openPartial(id, first.fileId);
      const resumed = await b.beginPartial(id, input, { fileId: first.fileId, length: 3000 });
      assert.notEqual(resumed.fileId, first.fileId);
      assert.equal(resumed.length, 3000);
      assert.equal(await a.readFrontier(id, resumed.fileId), 3000);
      assert.equal((await a.readMeta(id))?.fileId, resumed.fileId, 'the pointer names the new generation');
      assert.equal(await a.readFrontier(id, first.fileId), undefined, 'the old generation is gone');
      assert.equal(await a.openPartial(id, first.fileId), undefined);
      // A writer that lost its lock and writes on cannot touch the new generation.
      await first.append(Buffer.alloc(2000, 0xee));
      await resumed.append(data.subarray(3000));
      const reader = await a.openPartial(id, resumed.fileId);
      assert.ok(reader);
      assert.deepEqual(await readHandle(reader, data.length), data);
      assert.ok(oldReader);
      assert.deepEqual(await readHandle(oldReader, 3000), data.subarray(0, 3000), 'an open handle reads on');
      const final = await resumed.commit({
        expectedSize: data.length,
        mtime: new Date('2025-04-01T10:00:00Z'),
        identity: { recordingSid: input.recordingSid, etag: '"e1"', lastModified: null },
        fence: async () => undefined,
      });
      assert.equal(final.identity?.generation, resumed.fileId);
      await Promise.all([first.close(), resumed.close(), reader.close(), oldReader.close()]);
      assert.deepEqual(await a.leftovers(), []);
      assert.deepEqual(await readAll(a.createReadStream(id, 0, data.length - 1)), data);
    });

    it('a copy from a generation that is gone starts empty', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const writer = await store.beginPartial(id, meta(100), { fileId: '0123456789abcdef', length: 50 });
      assert.equal(writer.length, 0);
      await writer.close();
      await store.discardPartial(id);
      assert.deepEqual(await store.leftovers(), []);
    });

    it('a file replaced under the same name is seen afresh, and a stream pinned to the old one never reads the new', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const commit = (store: RecordingStore, fill: number) => commitFinal(store, id, fill);
      const first = await commit(a, 1);
      const lookedAt = performance.now();
      const seen = await b.stat(id);
      assert.equal(seen?.identity?.recordingSid, first.recordingSid);
      const second = await commit(a, 2);
      const remembered = await b.stat(id);
      // Within revalidateMs of the look, the answer comes from memory; a loaded machine may take longer
      // than that to commit, and then the name is rightly looked at again.
      if (performance.now() - lookedAt < backend.revalidateMs) {
        assert.equal(
          remembered?.identity?.recordingSid,
          first.recordingSid,
          'a remembered file is answered from memory',
        );
      }
      const fresh = await b.stat(id, { fresh: true });
      assert.equal(fresh?.identity?.recordingSid, second.recordingSid);
      assert.deepEqual(await readAll(b.createReadStream(id, 0, 9, fresh!.fileId)), Buffer.alloc(10, 2));
      await assert.rejects(readAll(b.createReadStream(id, 0, 9, seen!.fileId)), (err) => isRecgateError(err));
    });

    it('remove takes the recording, its identity and its partials; a stream reading it finishes, and the other instance stops seeing it', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      assert.equal(await a.remove(id), undefined, 'nothing stored: nothing removed');
      await commitFinal(a, id, 7, 300_000);
      const seen = await b.stat(id);
      assert.equal(seen?.size, 300_000);
      const reading = b.createReadStream(id, 0, 299_999, seen!.fileId);
      const partial = await a.beginPartial(`${id}`, meta(10));
      await partial.append(Buffer.alloc(5));
      await partial.close();
      assert.equal(await a.remove(id), 300_000);
      assert.deepEqual(await readAll(reading), Buffer.alloc(300_000, 7), 'a stream already reading finishes');
      assert.equal(await a.stat(id), undefined);
      assert.equal(await a.readMeta(id), undefined);
      assert.deepEqual(await a.leftovers(), []);
      await sleep(backend.revalidateMs + 20);
      assert.equal(await b.stat(id), undefined, 'the other instance looked at the name again');
    });

    it('sweeping: leftovers say whether a generation is current; removeLeftovers takes all of them', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const writer = await store.beginPartial(id, meta(100));
      await writer.append(Buffer.alloc(10));
      await writer.close();
      const [leftover] = await store.leftovers();
      assert.equal(leftover?.id, id);
      assert.equal(leftover?.current, true);
      await store.removeLeftovers(id);
      assert.deepEqual(await store.leftovers(), []);
      assert.equal(await store.readMeta(id), undefined);
    });

    it('slices: written beyond the frontier by another instance, recorded in the block map, never counted as frontier', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const data = randomBytes(50_000);
      const writer = await a.beginPartial(id, meta(data.length));
      assert.equal(await b.readFrontier(id, writer.fileId), 0);
      await writer.append(data.subarray(0, 10_000));
      assert.equal(await b.readFrontier(id, writer.fileId), 10_000);
      assert.equal(
        await b.readFrontier(id, '0123456789abcdef'),
        undefined,
        'the frontier of one generation only',
      );
      assert.equal(await b.openSlice(id, '0123456789abcdef'), undefined);
      const slice = await b.openSlice(id, writer.fileId);
      assert.ok(slice);
      assert.equal(await slice.claim(40_000, 50_000), true);
      const rival = await a.openSlice(id, writer.fileId);
      assert.ok(rival);
      assert.equal(await rival.claim(45_000, 46_000), false, 'overlapping claims exclude each other');
      assert.equal(await rival.claim(30_000, 40_000), true, 'adjacent ones do not');
      await rival.close();
      await slice.write(data.subarray(40_000), 40_000);
      await slice.close();
      const header = { fileId: writer.fileId, size: data.length, etag: '"e1"', lastModified: null };
      assert.equal(
        await b.appendBlockMap(id, header, [
          { t: 'claim', token: 't1', start: 40_000, end: 50_000 },
          { t: 'have', start: 40_000, end: 50_000 },
        ]),
        true,
      );
      assert.equal(await a.appendBlockMap(id, header, [{ t: 'off', reason: 'validator_mismatch' }]), true);
      assert.equal(await a.appendBlockMap(id, { ...header, fileId: '0123456789abcdef' }, []), false);
      assert.equal(await a.appendBlockMap(id, { ...header, etag: '"other"' }, []), false);
      assert.deepEqual(await a.readBlockMap(id, writer.fileId), {
        header,
        records: [
          { t: 'claim', token: 't1', start: 40_000, end: 50_000 },
          { t: 'have', start: 40_000, end: 50_000 },
          { t: 'off', reason: 'validator_mismatch' },
        ],
      });
      assert.equal(await a.readFrontier(id, writer.fileId), 10_000, 'a slice does not move the frontier');
      const resumed = await b.beginPartial(id, meta(data.length), { fileId: writer.fileId, length: 10_000 });
      assert.equal(resumed.length, 10_000, 'a resume copies up to the frontier, not to the end of the file');
      await writer.close();
      await resumed.append(data.subarray(10_000));
      const final = await resumed.commit({
        expectedSize: data.length,
        mtime: new Date('2025-04-01T10:00:00Z'),
        identity: { recordingSid: resumed.meta.recordingSid, etag: '"e1"', lastModified: null },
        fence: async () => undefined,
      });
      assert.equal(final.size, data.length);
      const handle = await a.openFinal(id);
      assert.ok(handle);
      assert.deepEqual(await readHandle(handle, data.length), data);
      await Promise.all([handle.close(), resumed.close()]);
      assert.equal(
        await a.readBlockMap(id, writer.fileId),
        undefined,
        'the block map goes with its generation',
      );
      assert.deepEqual(await a.leftovers(), []);
    });
  });
}
