import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { CHUNK_SIZE, freeChunks, takeChunk } from '../../src/io/chunks.js';
import { pumpTo, writeResult } from '../../src/serving/write.js';

async function serveOnce(body: () => Readable, length: number) {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': String(length) });
    pumpTo(body(), res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` };
}

describe('writing a serve() result', () => {
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

  it("writeResult: status, the framework's headers under the result's, the body, and onFinish only when whole", async (t) => {
    const finished: string[] = [];
    const body = Buffer.alloc(200_000, 7);
    const server = createServer((req, res) => {
      const stream =
        req.url === '/head'
          ? undefined
          : req.url === '/late'
            ? new Readable({ read() {} })
            : Readable.from([body.subarray(0, 100_000), body.subarray(100_000)]);
      writeResult(
        res,
        {
          statusCode: req.url === '/late' ? 206 : 200,
          headers: {
            'content-type': 'audio/mpeg',
            'x-request-id': 'from-result',
            'content-length': String(body.length),
          },
          ...(stream === undefined ? {} : { stream }),
        },
        {
          headers: { 'x-request-id': 'from-framework', 'x-other': 'kept' },
          flushHeaders: req.url === '/late',
          onFinish: () => finished.push(req.url ?? ''),
        },
      );
      if (req.url === '/late') res.once('close', () => stream?.destroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const get = (path: string, method = 'GET') =>
      new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
        httpRequest(`${base}${path}`, { method }, resolve).on('error', reject).end(),
      );
    const full = await get('/full');
    assert.equal(full.statusCode, 200);
    assert.equal(full.headers['x-request-id'], 'from-result');
    assert.equal(full.headers['x-other'], 'kept');
    const chunks: Buffer[] = [];
    for await (const chunk of full) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(body));
    const head = await get('/head', 'HEAD');
    assert.equal(head.statusCode, 200);
    head.resume();
    await once(head, 'end');
    // A body that has not begun: the status line and headers are out at once.
    const late = await get('/late');
    assert.equal(late.statusCode, 206);
    late.destroy();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(finished.sort(), ['/full', '/head'], 'a response cut short never counts as finished');
  });

  it('writeResult with a body at hand: headers and bytes in one response, bytes counted, the chunk given back', async (t) => {
    const closed: [number, boolean][] = [];
    let finished = 0;
    let freeWhileLent = -1;
    const server = createServer((_req, res) => {
      const body = takeChunk(50_000).fill(9);
      freeWhileLent = freeChunks();
      writeResult(
        res,
        {
          statusCode: 206,
          headers: { 'content-length': '50000', 'content-range': 'bytes 0-49999/80000' },
          body,
        },
        {
          headers: { 'x-request-id': 'r1' },
          onFinish: () => finished++,
          onClose: (bytes, whole) => closed.push([bytes, whole]),
          sendTimeoutMs: 60_000,
        },
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
      httpRequest(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, resolve)
        .on('error', reject)
        .end(),
    );
    assert.equal(res.statusCode, 206);
    assert.equal(res.headers['x-request-id'], 'r1');
    assert.equal(res.headers['content-range'], 'bytes 0-49999/80000');
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(Buffer.alloc(50_000, 9)));
    for (let i = 0; i < 100 && closed.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(closed, [[50_000, true]]);
    assert.equal(finished, 1);
    assert.equal(freeChunks(), freeWhileLent + 1, 'the buffer went back to the pool once the socket took it');
  });

  it('cuts a client that stops reading after the send timeout, and destroys the body', async (t) => {
    // 8 MB: more than the kernel buffers for a client that reads nothing (about 3.9 MB on loopback).
    const size = 128 * CHUNK_SIZE;
    let cut = 0;
    let body: Readable | undefined;
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(size) });
      body = Readable.from(
        (function* () {
          for (let i = 0; i < 128; i++) yield Buffer.alloc(CHUNK_SIZE, i);
        })(),
      );
      pumpTo(body, res, { sendTimeoutMs: 200, onSendTimeout: () => cut++ });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    socket.pause();
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    t.after(() => socket.destroy());
    for (let i = 0; cut === 0; i++) {
      assert.ok(i < 400, 'never cut');
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(cut, 1);
    assert.equal(body?.destroyed, true, 'the body is destroyed as the response is cut');
  });
});
