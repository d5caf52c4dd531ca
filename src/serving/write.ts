/**
 * Writes what `serve()` decided to a Node response: the status line and headers, then the body with
 * backpressure, in constant memory. Frameworks hand over their raw response (Fastify after `reply.hijack()`,
 * Express and plain `http` as they are); routes stay thin adapters.
 */
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { returnChunk } from '../io/chunks.js';
import type { ServeResult } from './serve.js';

export interface WriteOptions {
  /** Headers the framework already set (a request id, say); the result's own headers win. */
  headers?: Record<string, string>;
  /**
   * Sends the status line and headers at once instead of with the first body byte: for a body whose bytes
   * may come later (a range the download has not reached yet), so the client has its 206 and Content-Range
   * now. @default false
   */
  flushHeaders?: boolean;
  /** Called once the whole body was handed to the socket (never for a response cut short). */
  onFinish?: () => void;
  /**
   * Called once when the response is over, finished or cut short, with the body bytes the socket took and
   * whether the whole response went out.
   */
  onClose?: (bytesSent: number, finished: boolean) => void;
}

export function writeResult(res: ServerResponse, result: ServeResult, options: WriteOptions = {}): void {
  res.writeHead(result.statusCode, { ...options.headers, ...result.headers });
  if (options.onFinish !== undefined) res.once('finish', options.onFinish);
  const sent = { bytes: 0 };
  const onClose = options.onClose;
  if (onClose !== undefined) res.once('close', () => onClose(sent.bytes, res.writableFinished));
  if (result.stream === undefined) {
    res.end();
    return;
  }
  if (options.flushHeaders) res.flushHeaders();
  pumpTo(result.stream, res, sent);
}

/**
 * Writes `body` to `res` with backpressure, returning each chunk for reuse once the socket has taken it, and
 * counting the bytes taken in `sent`.
 * Ends `res` when the body ends; destroys `res` (so the client sees a broken response, never a short one)
 * if the body errors; destroys the body if the client goes away.
 */
export function pumpTo(body: Readable, res: ServerResponse, sent: { bytes: number } = { bytes: 0 }): void {
  const onData = (chunk: Buffer) => {
    const length = chunk.length;
    const flushed = res.write(chunk, (err) => {
      if (err) return;
      sent.bytes += length;
      returnChunk(chunk);
    });
    if (!flushed) {
      body.pause();
      res.once('drain', onDrain);
    }
  };
  const onDrain = () => body.resume();
  body.on('data', onData);
  body.once('end', () => res.end());
  body.once('error', (err) => res.destroy(err));
  res.once('close', () => {
    if (!body.destroyed) body.destroy();
  });
}
