/** Small helpers for undici's responses and errors, shared by the client's modules. */
import type { Readable } from 'node:stream';

/** The first value of a response header, or `null` when it is absent. */
export function headerValue(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/** The `code` of an error (`ECONNRESET`, `UND_ERR_…`), or of its `cause`; `null` when neither has one. */
export function errorCode(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  const causeCode = ((err as { cause?: { code?: unknown } } | null)?.cause as { code?: unknown } | undefined)
    ?.code;
  return typeof causeCode === 'string' ? causeCode : null;
}

/** What an aborted operation rejects with: an `AbortError` whose `cause` is the signal's reason. */
export function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  Object.assign(err, { code: 'ABORT_ERR' });
  return err;
}

/** Drops a body we will not read; undici reports the destroy as an error nobody needs to see. */
export function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}
