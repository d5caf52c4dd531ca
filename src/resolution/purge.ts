/**
 * Purge: what `DELETE /api/admin/calls/{callSid}/recording` and `recgate purge` both do. The call, and
 * every call playing the same recording, is marked first (through {@link RecordingState.purged}), so no
 * play fetches the recording again; then the local copy goes. Repeating it is harmless: it marks nothing
 * new and removes nothing more.
 */
import type { Logger } from 'pino';
import type { CallLog } from '../call-log/call-log.js';
import { createError } from '../errors.js';
import type { RecordingCache } from '../recordings/cache.js';
import type { CallSid, RecordingSid } from '../sid.js';
import type { RecordingState } from './state.js';

export interface PurgeDeps {
  callLog: Pick<CallLog, 'get'>;
  state: Pick<RecordingState, 'purged'>;
  cache: Pick<RecordingCache, 'remove'>;
}

export interface PurgeResult {
  callSid: CallSid;
  recordingSid: RecordingSid | null;
  /** The call whose file held the recording (the call itself, or the parent it plays). */
  owner: CallSid;
  /** Bytes of the finished file removed; 0 when there was none. */
  removedBytes: number;
  /** Calls marked purged by this run (0 when they already were). */
  marked: number;
}

/**
 * Marks the call's recording purged, then removes the local copy. Rejects with RECGATE_NOT_FOUND for a
 * call the call log does not know, and RECGATE_LOCK_TIMEOUT when a download of the recording keeps the
 * file's lock past the cache's lock timeout or `signal` (the marks stay: a later run removes the file).
 */
export async function purgeRecording(
  deps: PurgeDeps,
  callSid: CallSid,
  options: { signal?: AbortSignal | undefined; log: Logger },
): Promise<PurgeResult> {
  const call = await deps.callLog.get(callSid);
  if (!call) throw createError('RECGATE_NOT_FOUND', { message: 'No such call' });
  const { owner, marked } = await deps.state.purged(call);
  const removed = await deps.cache.remove(owner, 'purge', {
    signal: options.signal,
    log: options.log,
    onlyRecording: call.recordingSid ?? undefined,
  });
  const result = { callSid, recordingSid: call.recordingSid, owner, removedBytes: removed ?? 0, marked };
  options.log.info({ event: 'purge', ...result }, 'recording purged');
  return result;
}
