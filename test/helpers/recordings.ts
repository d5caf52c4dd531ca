/** Finished recordings in a recordings directory: putting one there, and waiting until a download left one. */
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';

/**
 * Stores `body` as the recording `recordingSid` of call `ownerCallSid` in `dir`: `{ownerCallSid}.mp3` with its
 * identity record, so the gateway serves it without a download. `mtime` becomes its Last-Modified.
 */
export async function storeRecording(
  dir: string,
  ownerCallSid: string,
  recordingSid: string,
  body: Uint8Array,
  mtime: Date,
): Promise<void> {
  const store = new FsRecordingStore({ dir });
  const writer = await store.beginPartial(ownerCallSid, {
    recordingSid,
    size: body.length,
    etag: null,
    lastModified: mtime.toUTCString(),
    acceptsRanges: false,
    startedAt: new Date().toISOString(),
  });
  try {
    if (body.length > 0) await writer.append(body);
    await writer.commit({
      expectedSize: body.length,
      mtime,
      identity: { recordingSid, etag: null, lastModified: mtime.toUTCString() },
      fence: async () => undefined,
    });
  } finally {
    await writer.close();
    await store.close();
  }
}

/** What a finished recording leaves in the recordings directory, sorted: the file and its identity record. */
export function finishedNames(callSid: string): string[] {
  return [`.${callSid}.mp3.id`, `${callSid}.mp3`];
}

/** The files of one call in the directory, sorted. */
export async function callFiles(dir: string, callSid: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.includes(callSid)).sort();
}

export interface SettleOptions {
  /** @default 10000 */
  timeoutMs?: number;
  /**
   * Also settled with the call's lock file still there after this many ms (a dead holder's lock file stays
   * until a sweep when nobody took the lock after it). @default never
   */
  lockFileAfterMs?: number;
}

/**
 * Waits until the call's files are exactly its finished recording and identity record: the download
 * committed, cleaned up and let go of its lock. Resolves to the names seen; rejects naming them when they do
 * not settle in time.
 */
export async function settledFiles(
  dir: string,
  callSid: string,
  options: SettleOptions = {},
): Promise<string[]> {
  const wanted = finishedNames(callSid).join(' ');
  const withLock = [...finishedNames(callSid), `.${callSid}.lock`].sort().join(' ');
  const started = Date.now();
  for (;;) {
    const names = await callFiles(dir, callSid);
    if (names.join(' ') === wanted) return names;
    const waited = Date.now() - started;
    if (
      options.lockFileAfterMs !== undefined &&
      waited >= options.lockFileAfterMs &&
      names.join(' ') === withLock
    ) {
      return names;
    }
    if (waited > (options.timeoutMs ?? 10_000)) {
      throw new Error(`the files of ${callSid} never settled: ${names.join(' ')}`);
    }
    await sleep(10);
  }
}
