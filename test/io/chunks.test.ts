import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CHUNK_SIZE, freeChunks, returnChunk, takeChunk } from '../../src/io/chunks.js';

describe('read chunks', () => {
  it('reuses a returned chunk, once', () => {
    const a = takeChunk();
    assert.equal(a.length, CHUNK_SIZE);
    const before = freeChunks();
    returnChunk(a.subarray(0, 10));
    assert.equal(freeChunks(), before + 1);
    returnChunk(a);
    assert.equal(freeChunks(), before + 1, 'a second return is ignored');
    const b = takeChunk(100);
    assert.equal(b.buffer, a.buffer);
    assert.equal(b.length, 100);
    returnChunk(Buffer.alloc(10));
    assert.equal(freeChunks(), before, 'foreign buffers are ignored');
    returnChunk(b);
  });

  it('hands out plain buffers above the chunk size', () => {
    const big = takeChunk(CHUNK_SIZE + 1);
    const before = freeChunks();
    returnChunk(big);
    assert.equal(freeChunks(), before);
  });
});
