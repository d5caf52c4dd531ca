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
   * Sends the status line and headers without waiting for the first body byte: for a body whose bytes may
   * come later (a range the download has not reached yet), so the client has its 206 and Content-Range now.
   * They still leave with the first bytes when those are read within the same turn of the event loop.
   * @default false
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

export interface PumpOptions {
  /**
   * Cuts the response when the client took none of its pending bytes for this long, in ms: the socket
   * is destroyed, which frees its descriptor and destroys the body (a download's reader lets go). It measures
   * progress, not total time: each chunk the socket takes restarts it, so a slow client that keeps reading
   * is never cut. A client that stops reading is cut once the kernel's buffers are full and this much time
   * passed without a chunk going out. 0 = never. @default 0
   */
  sendTimeoutMs?: number;
  /** Called when the send timeout cut the response. */
  onSendTimeout?: () => void;
}

export function writeResult(
  res: ServerResponse,
  result: ServeResult,
  options: WriteOptions & PumpOptions = {},
): void {
  res.writeHead(
    result.statusCode,
    options.headers === undefined ? result.headers : { ...options.headers, ...result.headers },
  );
  if (result.body !== undefined) {
    writeBody(result.body, res, options);
    return;
  }
  const sent = { bytes: 0 };
  // A response emits 'finish' and 'close' once each: plain listeners, without `once`'s wrappers.
  if (options.onFinish !== undefined) res.on('finish', options.onFinish);
  const onClose = options.onClose;
  if (onClose !== undefined) res.on('close', () => onClose(sent.bytes, res.writableFinished));
  if (result.stream === undefined) {
    res.end();
    return;
  }
  // Sent with the first body bytes when those are there at once (one write instead of two, which under a
  // stampede's first byte is hundreds of writes fewer), else on their own right after.
  if (options.flushHeaders) setImmediate(flushHeadersIfIdle, res);
  pumpTo(result.stream, res, options, sent);
}

/** Sends the headers if no body byte took them along yet (after one did, a flush writes nothing). */
function flushHeadersIfIdle(res: ServerResponse): void {
  if (!res.destroyed && !res.writableEnded) res.flushHeaders();
}

/**
 * Writes a body held in one buffer and ends `res`: with the headers, in one write to the socket. The buffer
 * goes back to the chunk pool once the socket took it. With one chunk, "no progress" and "not finished" are
 * the same, so the send timeout runs from the write until 'finish'; it is not even armed when the socket
 * took every byte at once (the usual warm range), as 'finish' then follows in this turn's callbacks.
 */
function writeBody(body: Buffer, res: ServerResponse, options: WriteOptions & PumpOptions): void {
  const length = body.length;
  let stall: NodeJS.Timeout | undefined;
  let finished = false;
  const { onFinish, onClose } = options;
  // 'finish': the socket took the whole response; a response cut short never finishes, and its buffer,
  // which a pending write may still hold, is left to the garbage collector. Each fires once per response.
  res.on('finish', () => {
    finished = true;
    clearTimeout(stall);
    returnChunk(body);
    onFinish?.();
  });
  res.on('close', () => {
    clearTimeout(stall);
    onClose?.(finished ? length : 0, res.writableFinished);
  });
  // Corked, the headers and the body leave in one writev instead of two writes.
  res.cork();
  res.end(body);
  res.uncork();
  const timeoutMs = options.sendTimeoutMs ?? 0;
  if (timeoutMs > 0 && !finished && res.writableLength > 0) {
    stall = setTimeout(() => {
      options.onSendTimeout?.();
      res.destroy();
    }, timeoutMs);
  }
}

/**
 * Writes `body` to `res` with backpressure, returning each chunk for reuse once the socket has taken it, and
 * counting the bytes taken in `sent`.
 * Ends `res` when the body ends; destroys `res` (so the client sees a broken response, never a short one)
 * if the body errors; destroys the body if the client goes away.
 */
export function pumpTo(
  body: Readable,
  res: ServerResponse,
  options: PumpOptions = {},
  sent: { bytes: number } = { bytes: 0 },
): void {
  const timeoutMs = options.sendTimeoutMs ?? 0;
  // Armed only while bytes wait for the socket: while the body waits for 'drain', and after the body ended
  // until the response is finished. A body still coming from upstream is no stalled client.
  let stall: NodeJS.Timeout | undefined;
  let ended = false;
  /** The body is paused until the response drains. */
  let draining = false;
  const arm = () => {
    if (timeoutMs > 0) stall ??= setTimeout(onStall, timeoutMs);
  };
  const disarm = () => {
    clearTimeout(stall);
    stall = undefined;
  };
  const onStall = () => {
    stall = undefined;
    options.onSendTimeout?.();
    // The body first, at once: a download's reader lets go now, not when the socket's close comes round.
    if (!body.destroyed) body.destroy();
    res.destroy();
  };
  const onData = (chunk: Buffer) => {
    const length = chunk.length;
    const flushed = res.write(chunk, (err) => {
      if (err) return;
      sent.bytes += length;
      returnChunk(chunk);
      stall?.refresh();
    });
    if (!flushed) {
      body.pause();
      draining = true;
      arm();
    }
  };
  const onDrain = () => {
    if (!draining) return;
    draining = false;
    // After the end, what is still buffered must reach the socket too: the timer runs until 'finish'.
    if (!ended) disarm();
    body.resume();
  };
  // One listener for the whole response rather than a `once` per full buffer: under hundreds of slow
  // clients those wrappers outlived young-generation collections and were promoted as garbage.
  res.on('drain', onDrain);
  body.on('data', onData);
  body.once('end', () => {
    ended = true;
    res.end();
    if (res.writableFinished) disarm();
    else arm();
  });
  body.once('error', (err) => res.destroy(err));
  res.once('finish', disarm);
  res.once('close', () => {
    disarm();
    if (!body.destroyed) body.destroy();
  });
}
