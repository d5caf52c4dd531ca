/**
 * Media responses of the emulator: Range and If-Range handling as a pure function, and a body writer that
 * paces bytes to a bandwidth and plays out injected body faults on the raw socket.
 */
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export type RangeOutcome =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

export interface RangeRequest {
  range: string | undefined;
  ifRange: string | undefined;
  etag: string;
  lastModified: string;
  size: number;
}

/**
 * Decides between 200, 206 and 416 for one media request. Only a single `bytes=` range is honoured
 * (`a-b`, `a-`, `-n`); anything else, or an If-Range that does not match, yields the full body, as
 * RFC 9110 allows. An If-Range date matches only the exact Last-Modified, an entity tag only strongly.
 */
export function evaluateRange(request: RangeRequest): RangeOutcome {
  const { range, size } = request;
  if (range === undefined) return { kind: 'full' };
  if (request.ifRange !== undefined && !ifRangeMatches(request.ifRange, request.etag, request.lastModified)) {
    return { kind: 'full' };
  }
  const match = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
  if (!match) return { kind: 'full' };
  const [, first, last] = match;
  if (first === '' && last === '') return { kind: 'full' };
  if (first === '') {
    const suffix = Number(last);
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' };
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? Number.MAX_SAFE_INTEGER : Number(last);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

function ifRangeMatches(ifRange: string, etag: string, lastModified: string): boolean {
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith('W/')) return value === etag;
  const date = Date.parse(value);
  return !Number.isNaN(date) && date === Date.parse(lastModified);
}

/** How a body ends. */
export type BodyEnding =
  | { kind: 'end' }
  | { kind: 'reset'; afterBytes: number }
  | { kind: 'short'; afterBytes: number }
  | { kind: 'stall'; afterBytes: number; stallMs: number };

export interface BodyPlan {
  body: Buffer;
  /** Bytes per second; 0 sends as fast as the socket drains. */
  bandwidth: number;
  ending: BodyEnding;
  /**
   * Called with the size of every chunk once the socket has taken it (Node's write callback, without an
   * error), so bytes still queued when a client goes away or a fault resets the connection are not counted.
   */
  onBytes(count: number): void;
  /** Resolves when the emulator closes, to end stalls early. */
  closing: Promise<void>;
}

const TICK_MS = 15;
const CHUNK_BYTES = 64 * 1024;

/**
 * Writes `body` (already sliced to the range) to a response whose headers are out, then ends it as
 * planned. A token bucket refilled every ~15 ms paces the bytes, so a slow link looks slow from the first
 * byte on rather than as one late burst. Stops quietly when the client goes away.
 */
export async function writeBody(res: ServerResponse, plan: BodyPlan): Promise<void> {
  const { body, bandwidth, ending } = plan;
  const limit = ending.kind === 'end' ? body.length : Math.min(ending.afterBytes, body.length);
  let gone = false;
  const onClose = () => {
    gone = true;
  };
  res.once('close', onClose);
  try {
    const startedAt = performance.now();
    // One tick's worth may go out at once: the bucket starts full.
    const burst = bandwidth > 0 ? Math.max(1, Math.floor((bandwidth * TICK_MS) / 1000)) : 0;
    let sent = 0;
    while (sent < limit && !gone) {
      let allowance = CHUNK_BYTES;
      if (bandwidth > 0) {
        const earned = Math.floor((bandwidth * (performance.now() - startedAt)) / 1000) + burst;
        allowance = Math.min(CHUNK_BYTES, earned - sent);
        // Wait for a tick's worth (or a chunk, or the rest of the body): writing whatever a few
        // microseconds earned wrote the body a few bytes at a time in a busy loop, at the bandwidth exactly,
        // and took a whole core from whatever shares the machine (the bench's servers).
        if (allowance < Math.min(burst, CHUNK_BYTES, limit - sent)) {
          await sleep(TICK_MS);
          continue;
        }
      }
      const n = Math.min(allowance, limit - sent);
      const ok = res.write(body.subarray(sent, sent + n), (err) => {
        if (!err) plan.onBytes(n);
      });
      sent += n;
      if (!ok && !gone) await drained(res);
    }
    if (gone) return;
    switch (ending.kind) {
      case 'end':
        res.end();
        return;
      case 'reset':
        await flushed(res);
        res.socket?.resetAndDestroy();
        return;
      case 'short':
        await flushed(res);
        // A FIN after fewer bytes than Content-Length promised: the client sees a premature close.
        res.socket?.end();
        return;
      case 'stall': {
        const stop = new AbortController();
        const timer = sleep(ending.stallMs, undefined, { signal: stop.signal }).catch(() => undefined);
        const closed = new Promise<void>((resolve) => res.once('close', () => resolve()));
        await Promise.race([timer, closed, plan.closing]);
        stop.abort();
        if (!gone) res.socket?.resetAndDestroy();
        return;
      }
    }
  } finally {
    res.off('close', onClose);
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/** Waits until what was written has left Node's buffers, so a following reset does not swallow it. */
function flushed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) {
      resolve();
      return;
    }
    res.write('', () => resolve());
  });
}
