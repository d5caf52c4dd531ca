/**
 * The contract every {@link RecordingStore} backend must pass; a backend's test file calls
 * {@link storeContractTests} with a factory giving two store instances on the same storage.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { isRecgateError } from '../../src/errors.js';
import type { PartialMetaInput, RecordingStore } from '../../src/recordings/store/store.js';
import { hex32, readAll } from './helpers.js';

export interface StoreBackend {
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

export function storeContractTests(name: string, backend: StoreBackend): void {
  describe(`RecordingStore contract: ${name}`, () => {
    it('matches interface', async (t) => {
      const [store] = await backend.create(t);
      for (const method of [
        'stat',
        'createReadStream',
        'openFinal',
        'statPartial',
        'readMeta',
        'openPartial',
        'beginPartial',
        'resumePartial',
        'discardPartial',
        'leftovers',
        'readFrontier',
        'openSlice',
        'readBlockMap',
        'appendBlockMap',
      ] as const) {
        assert.equal(typeof store[method], 'function', method);
      }
    });

    it('says miss with undefined', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      assert.equal(await store.stat(id), undefined);
      assert.equal(await store.openFinal(id), undefined);
      assert.equal(await store.statPartial(id), undefined);
      assert.equal(await store.readMeta(id), undefined);
      assert.equal(await store.openPartial(id), undefined);
      assert.equal(await store.resumePartial(id), undefined);
      assert.equal(await store.readFrontier(id, 'x'), undefined);
      assert.equal(await store.openSlice(id, 'x'), undefined);
      assert.equal(await store.readBlockMap(id), undefined);
      await store.discardPartial(id);
      assert.deepEqual(await store.leftovers(), []);
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
      assert.equal((await b.statPartial(id))?.fileId, writer.fileId);
      assert.equal((await b.statPartial(id))?.size, 0);
      const reader = await b.openPartial(id);
      assert.ok(reader);
      assert.equal(reader.fileId, writer.fileId);
      await writer.append(data.subarray(0, 40_000));
      assert.equal(writer.length, 40_000);
      assert.equal(await reader.size(), 40_000);
      assert.deepEqual(await readHandle(reader, 40_000), data.subarray(0, 40_000));
      await writer.append(data.subarray(40_000));
      assert.equal(await b.stat(id), undefined, 'nothing under the final name before commit');
      const mtime = new Date('2025-04-01T10:00:00Z');
      const final = await writer.commit(data.length, mtime);
      assert.equal(final.size, data.length);
      assert.equal(final.fileId, writer.fileId, 'the rename keeps the file');
      const stat = await b.stat(id);
      assert.equal(stat?.size, data.length);
      assert.equal(stat?.mtime.getTime(), mtime.getTime());
      assert.equal(await b.statPartial(id), undefined);
      assert.equal(await b.readMeta(id), undefined);
      assert.deepEqual(
        await readHandle(reader, data.length),
        data,
        'a handle on the partial reads on after the rename',
      );
      assert.deepEqual(await readAll(b.createReadStream(id, 10, 99_999)), data.subarray(10));
      const finalHandle = await b.openFinal(id);
      assert.ok(finalHandle);
      assert.deepEqual(await readHandle(finalHandle, data.length), data);
      await Promise.all([reader.close(), writer.close(), finalHandle.close()]);
      assert.deepEqual(await b.leftovers(), []);
    });

    it('refuses to commit a partial of the wrong size', async (t) => {
      const [store] = await backend.create(t);
      const id = `CA${hex32()}`;
      const writer = await store.beginPartial(id, meta(10));
      await writer.append(Buffer.alloc(7));
      await assert.rejects(writer.commit(10, new Date()), (err) => isRecgateError(err));
      assert.equal(await store.stat(id), undefined);
      await writer.close();
    });

    it('resumes a partial left by a dead writer, and a new generation gets a new file id', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const data = randomBytes(5000);
      const first = await a.beginPartial(id, meta(data.length));
      await first.append(data.subarray(0, 3000));
      const oldReader = await a.openPartial(id);
      await first.close();
      const resumed = await b.resumePartial(id);
      assert.ok(resumed);
      assert.equal(resumed.length, 3000);
      assert.equal(resumed.fileId, first.fileId);
      assert.equal(resumed.meta.size, data.length);
      await resumed.append(data.subarray(3000, 4000));
      await resumed.close();
      assert.deepEqual(
        (await a.leftovers()).map((l) => l.id),
        [id],
      );
      const again = await a.beginPartial(id, meta(data.length));
      assert.notEqual(again.fileId, first.fileId);
      assert.equal(again.length, 0);
      assert.ok(oldReader);
      assert.deepEqual(
        await readHandle(oldReader, 4000),
        data.subarray(0, 4000),
        'the old generation is intact',
      );
      await again.close();
      await oldReader.close();
      await a.discardPartial(id);
      assert.equal(await a.statPartial(id), undefined);
      assert.equal(await a.readMeta(id), undefined);
      assert.deepEqual(await a.leftovers(), []);
    });

    it('slices: written beyond the frontier by another instance, recorded in the block map, never counted as frontier', async (t) => {
      const [a, b] = await backend.create(t);
      const id = `CA${hex32()}`;
      const data = randomBytes(50_000);
      const writer = await a.beginPartial(id, meta(data.length));
      assert.equal(await b.readFrontier(id, writer.fileId), 0);
      await writer.append(data.subarray(0, 10_000));
      assert.equal(await b.readFrontier(id, writer.fileId), 10_000);
      assert.equal(await b.readFrontier(id, 'another'), undefined, 'the frontier of one generation only');
      assert.equal(await b.openSlice(id, 'another'), undefined);
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
      assert.equal(await a.appendBlockMap(id, { ...header, fileId: 'another' }, []), false);
      assert.deepEqual(await a.readBlockMap(id), {
        header,
        records: [
          { t: 'claim', token: 't1', start: 40_000, end: 50_000 },
          { t: 'have', start: 40_000, end: 50_000 },
          { t: 'off', reason: 'validator_mismatch' },
        ],
      });
      assert.equal(await a.readFrontier(id, writer.fileId), 10_000, 'a slice does not move the frontier');
      await writer.close();
      const resumed = await b.resumePartial(id);
      assert.ok(resumed);
      assert.equal(resumed.length, 10_000, 'a resume starts at the frontier, not at the end of the file');
      await resumed.append(data.subarray(10_000, 40_000));
      await resumed.append(data.subarray(40_000));
      const final = await resumed.commit(data.length, new Date('2025-04-01T10:00:00Z'));
      assert.equal(final.size, data.length);
      const handle = await a.openFinal(id);
      assert.ok(handle);
      assert.deepEqual(await readHandle(handle, data.length), data);
      await Promise.all([handle.close(), resumed.close()]);
      assert.equal(await a.readBlockMap(id), undefined, 'the block map goes with the partial');
      assert.deepEqual(await a.leftovers(), []);
    });
  });
}
