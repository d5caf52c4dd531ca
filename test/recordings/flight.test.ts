/**
 * The flight's readers and the bytes it keeps of what the download just appended: readers woken at the
 * frontier copy those instead of reading the file, and get exactly the file's bytes wherever they start.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { Flight } from '../../src/recordings/flight.js';
import { READ_CHUNK, type ReadHandle } from '../../src/recordings/store/store.js';

const REF = { recordingSid: `RE${'a'.repeat(32)}`, ownerCallSid: `CA${'b'.repeat(32)}` } as RecordingRef;

/** A partial file in memory that counts the reads it answers; `written` bytes of `bytes` are "on disk". */
class MemoryHandle implements ReadHandle {
  readonly fileId: string;
  reads = 0;
  written = 0;
  readonly #bytes: Buffer;

  constructor(bytes: Buffer, fileId = 'f1') {
    this.#bytes = bytes;
    this.fileId = fileId;
  }

  async read(buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
    this.reads++;
    await new Promise((r) => setImmediate(r));
    const end = Math.min(position + length, this.written);
    if (end <= position) return 0;
    return this.#bytes.copy(buffer, offset, position, end);
  }

  async size(): Promise<number> {
    return this.written;
  }

  async close(): Promise<void> {}
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part as Buffer));
  return Buffer.concat(parts);
}

/** Runs a download of `bytes` in `chunks` through a flight while `starts` readers read from their offsets. */
async function download(bytes: Buffer, chunks: number[], starts: number[], pauseEvery = 1) {
  const flight = new Flight(REF);
  const handle = new MemoryHandle(bytes);
  flight.adopt(handle, 0);
  flight.setIdentity({ size: bytes.length, lastModified: new Date(0), upstreamEtag: null });
  const readers = starts.map((start) => collect(flight.createReadStream(start, bytes.length - 1)));
  let at = 0;
  for (const [i, length] of chunks.entries()) {
    // The writer's chunk is its own buffer, as the upstream's are.
    const chunk = Buffer.from(bytes.subarray(at, at + length));
    handle.written = at + length;
    at += length;
    flight.advance(at, chunk);
    if (i % pauseEvery === 0) await new Promise((r) => setImmediate(r));
  }
  flight.complete({ size: bytes.length, mtime: new Date(0), fileId: handle.fileId } as never, handle);
  return { bodies: await Promise.all(readers), handle };
}

describe('flight readers', () => {
  it('readers waiting at the frontier take the appended bytes without reading the file', async () => {
    const bytes = randomBytes(READ_CHUNK * 4);
    const chunk = 16 * 1024;
    const chunks = Array.from({ length: bytes.length / chunk }, () => chunk);
    const { bodies, handle } = await download(bytes, chunks, Array(200).fill(0));
    for (const body of bodies) assert.ok(body.equals(bytes));
    // 200 readers, 4 read chunks each: without the kept bytes that is at least 800 reads of the file.
    assert.ok(handle.reads < 50, `${handle.reads} reads of the file`);
  });

  it('a reader that fell behind the kept bytes reads the file, and gets the same bytes', async () => {
    const bytes = randomBytes(READ_CHUNK * 6);
    const chunk = 8 * 1024;
    const flight = new Flight(REF);
    const handle = new MemoryHandle(bytes);
    flight.adopt(handle, 0);
    flight.setIdentity({ size: bytes.length, lastModified: new Date(0), upstreamEtag: null });
    // The whole file is written before this reader starts: only the last chunks are still kept.
    let at = 0;
    while (at < bytes.length) {
      handle.written = at + chunk;
      at += chunk;
      flight.advance(at, Buffer.from(bytes.subarray(at - chunk, at)));
    }
    const late = collect(flight.createReadStream(READ_CHUNK, bytes.length - 1));
    flight.complete({ size: bytes.length, mtime: new Date(0), fileId: handle.fileId } as never, handle);
    assert.ok((await late).equals(bytes.subarray(READ_CHUNK)));
    // Readers were woken every read chunk, so about one read chunk is kept: the 4 before it come from the file.
    assert.equal(handle.reads, 4, 'the early bytes came from the file');
  });

  it('a new generation drops what the old one kept', async () => {
    const old = randomBytes(32 * 1024);
    const fresh = randomBytes(32 * 1024);
    const flight = new Flight(REF);
    const first = new MemoryHandle(old, 'g1');
    flight.adopt(first, 0);
    flight.setIdentity({ size: old.length, lastModified: new Date(0), upstreamEtag: null });
    first.written = 16 * 1024;
    flight.advance(16 * 1024, Buffer.from(old.subarray(0, 16 * 1024)));
    const second = new MemoryHandle(fresh, 'g2');
    second.written = 16 * 1024;
    flight.adopt(second, 16 * 1024);
    const into = Buffer.alloc(1024);
    assert.equal(flight.copyTail(into, 0, 1024), false, 'nothing kept of the old generation');
    const body = collect(flight.createReadStream(0, fresh.length - 1));
    second.written = fresh.length;
    flight.advance(fresh.length, Buffer.from(fresh.subarray(16 * 1024)));
    flight.complete({ size: fresh.length, mtime: new Date(0), fileId: 'g2' } as never, second);
    assert.ok((await body).equals(fresh));
  });

  it('keeps at most a few read chunks, whatever the readers do', () => {
    const flight = new Flight(REF);
    const handle = new MemoryHandle(Buffer.alloc(0));
    flight.adopt(handle, 0);
    const chunk = Buffer.alloc(4096);
    for (let at = 4096; at <= 4096 * 1000; at += 4096) flight.advance(at, chunk);
    const into = Buffer.alloc(4096);
    assert.equal(flight.copyTail(into, 4096 * 1000 - 4 * READ_CHUNK - 4096, 4096), false);
    assert.equal(flight.copyTail(into, 4096 * 999, 4096), true);
  });

  it('property: every reader gets exactly the file, whatever the chunk sizes, starts and pauses', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 3 * READ_CHUNK }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 4 }),
        async (chunks, rawStarts, pauseEvery) => {
          const size = chunks.reduce((a, b) => a + b, 0);
          const bytes = randomBytes(size);
          const starts = rawStarts.map((s) => s % size);
          const { bodies } = await download(bytes, chunks, starts, pauseEvery);
          for (const [i, body] of bodies.entries()) {
            assert.ok(body.equals(bytes.subarray(starts[i])), `reader from ${starts[i]}`);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
