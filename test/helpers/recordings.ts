/** Puts a finished recording into a recordings directory the way a download commits one. */
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
