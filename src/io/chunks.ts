/**
 * Reusable 64 KiB read buffers.
 *
 * Streaming a recording to 200 clients at once allocates a 64 KiB buffer per read; as garbage they pile
 * up outside the V8 heap until the next collection, which V8 starts only after tens of megabytes of such
 * memory. Readers (the recording store's and the in-flight download's streams) take their buffers here
 * instead, and the response writer (`serving/write.ts`) gives each one back once the socket has flushed it,
 * so a busy process reuses a bounded set of buffers.
 *
 * A chunk that is never given back (its stream was read by something else) is simply collected.
 */
export const CHUNK_SIZE = 64 * 1024;
/** Free buffers kept at most (16 MiB). */
const MAX_FREE = 256;

const free: ArrayBuffer[] = [];
/** Buffers handed out and not yet given back; a chunk is returned at most once. */
const lent = new WeakSet<ArrayBuffer>();

/** A buffer of `length` bytes (at most {@link CHUNK_SIZE}) to read into and push downstream. */
export function takeChunk(length: number = CHUNK_SIZE): Buffer {
  if (length > CHUNK_SIZE) return Buffer.allocUnsafe(length);
  const memory = free.pop() ?? new ArrayBuffer(CHUNK_SIZE);
  lent.add(memory);
  return Buffer.from(memory, 0, length);
}

/** Gives a chunk (or any view of one) back for reuse; anything not from {@link takeChunk} is ignored. */
export function returnChunk(chunk: Buffer): void {
  const memory = chunk.buffer as ArrayBuffer;
  if (!lent.has(memory)) return;
  lent.delete(memory);
  if (free.length < MAX_FREE) free.push(memory);
}

/** Buffers waiting for reuse (for tests and metrics). */
export function freeChunks(): number {
  return free.length;
}
