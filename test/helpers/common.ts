/**
 * Small helpers every suite needs (and the benchmarks): bytes of a stream, their hash, error-code assertions,
 * temp dirs, ids, a free port, waiting for something to be told.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRecgateError } from '../../src/errors.js';

/** Every byte of a stream. */
export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** For `assert.rejects` and `assert.throws`: the error is a RecgateError with this code. */
export function isCode(code: string): (err: unknown) => true {
  return (err) => {
    assert.ok(isRecgateError(err), `expected RecgateError ${code}, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

/**
 * A fresh temporary directory, removed after the test. A background task of the test may still create a file
 * there as the directory goes (a download committing after the test's last read, registered after the
 * directory, so closed after it is removed): the removal is asynchronous, so that task's calls complete
 * meanwhile, and each retry starts over from the directory's listing. `rmSync` retried only its last
 * `rmdir`, which a file created since its listing failed every time (ENOTEMPTY).
 */
export function tempDir(t: { after(fn: () => Promise<void>): void }, prefix = 'recgate-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 }));
  return dir;
}

/** 32 random lower-case hex digits, the body of a Twilio SID. */
export function hex32(): string {
  return randomBytes(16).toString('hex');
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for a server that must know its port up front). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Resolves once `check()` holds, looking every 5 ms; fails naming `what` after `timeoutMs` (a bound, not a
 * measurement). Also for what is told after the bytes a test waited for: `recording_saved` comes once the
 * download's lock is released, which may be after its last reader's last byte and after its files settled.
 */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (${timeoutMs} ms)`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
