import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { CHUNK_SIZE, freeChunks, pumpTo, returnChunk, takeChunk } from '../../src/serving/chunks.js';

async function serveOnce(body: () => Readable, length: number) {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(length) });
    pumpTo(body(), res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

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

  it('pumps a body with backpressure and gives every chunk back once flushed', async (t) => {
    const parts = 64;
    const { server, url } = await serveOnce(
      () =>
        Readable.from(
          (function* () {
            for (let i = 0; i < parts; i++) takeChunk().fill(i % 256);
            for (let i = 0; i < parts; i++) yield takeChunk().fill(i % 256);
          })(),
        ),
      parts * CHUNK_SIZE,
    );
    t.after(() => server.close());
    const res = await new Promise<import('node:http').IncomingMessage>((resolve) =>
      httpRequest(url, resolve).end(),
    );
    let received = 0;
    let index = 0;
    for await (const chunk of res) {
      for (const byte of chunk as Buffer) {
        assert.equal(byte, Math.floor(index / CHUNK_SIZE) % 256);
        index++;
      }
      received += (chunk as Buffer).length;
    }
    assert.equal(received, parts * CHUNK_SIZE);
    assert.ok(freeChunks() >= 1, 'chunks came back for reuse');
  });

  it('breaks the response, never ends it short, when the body errors', async (t) => {
    const { server, url } = await serveOnce(
      () =>
        new Readable({
          read() {
            this.push(takeChunk());
            this.destroy(new Error('download failed'));
          },
        }),
      10 * CHUNK_SIZE,
    );
    t.after(() => server.close());
    // Whether the client sees a reset before or after the status line, it must see a failure.
    await assert.rejects(async () => {
      const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
        httpRequest(url, resolve).on('error', reject).end(),
      );
      for await (const _ of res) {
        // drain
      }
    });
  });
});
