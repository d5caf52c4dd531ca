/**
 * The one writer of what recgate knows about a call's recording (the call log's recording columns: which
 * recording plays, which call owns it, and whether it is available, processing, absent or deleted).
 *
 * Everything that learns something about a recording tells this module, and it decides what to store: the
 * resolver after a lookup, Twilio's recording-status webhook, a download that found the recording deleted at
 * Twilio, and the admin API registering a call. Nothing else writes those columns.
 *
 * It also decides what a recording deleted at Twilio means for its local copies, however that was learned
 * (the webhook, or a 404 on any download, HEAD, waveform or prefetch of any variant): every variant holding
 * that recording is removed, unless the operator keeps such copies (`--keep-after-upstream-delete`; they are
 * still never served, since the call is marked deleted).
 */
import type { Logger } from 'pino';
import type { CallLog, CallRecord, CallUpsert } from '../call-log/call-log.js';
import { createError, isRecgateError } from '../errors.js';
import type { RecordingCache, RecordingRef } from '../recordings/cache.js';
import type { CallSid, RecordingSid } from '../sid.js';

/** The local copies of recordings, as the state removes them when Twilio deleted a recording. */
export interface LocalCopies {
  cache: Pick<RecordingCache, 'remove'>;
  /** `--keep-after-upstream-delete`: a recording deleted upstream keeps its local copies. */
  keep: boolean;
  /** Where a removal that failed after a 404 is reported when the caller gave no request logger. */
  logger: Logger;
}

/** What Twilio's recordingStatusCallback said. */
export interface RecordingStatusReport {
  callSid: CallSid;
  recordingSid: RecordingSid;
  /** Twilio's `RecordingStatus`: `in-progress`, `completed`, `absent`, `failed`, `deleted`, … */
  status: string;
  /** `RecordingDuration` in seconds, when given. */
  durationS: number | null;
}

/** What a status report changed: stored as the call's recording, marked deleted, or nothing. */
export type StatusOutcome = 'stored' | 'deleted' | 'ignored';

export class RecordingState {
  readonly #log: CallLog;
  readonly #copies: LocalCopies | undefined;

  /** `copies`: omitted where no recordings are stored (an admin command without the cache): none removed. */
  constructor(callLog: CallLog, copies?: LocalCopies) {
    this.#log = callLog;
    this.#copies = copies;
  }

  /**
   * A lookup found the recording that plays for `callSid`, owned by `owner` (the call or its parent). A
   * recording an operator purged is not played again: the call is marked too, and RECGATE_RECORDING_PURGED
   * thrown.
   */
  async found(callSid: CallSid, recordingSid: RecordingSid, owner: CallSid): Promise<RecordingRef> {
    if (await this.#log.isPurged(recordingSid)) {
      await this.#log.markPurged(callSid, recordingSid);
      throw createError('RECGATE_RECORDING_PURGED');
    }
    await this.#log.setResolution(callSid, {
      recordingState: 'available',
      recordingSid,
      recordingOwnerCallSid: owner,
    });
    return { recordingSid, ownerCallSid: owner };
  }

  /** A lookup found no playable recording: none at all, or one still processing. */
  async unresolved(callSid: CallSid, state: 'absent' | 'processing'): Promise<void> {
    await this.#log.setResolution(callSid, { recordingState: state });
  }

  /**
   * Twilio's recording-status callback for a call. A completed recording of the call itself becomes what it
   * plays, unless it already plays one of its own (a call's first recording is the conversation): it also
   * replaces a parent's recording the call was playing. A deleted recording is deleted for every call that
   * plays it; so is one Twilio reports `absent` (it made none) or `failed`, and a call that had no recording
   * yet remembers that status (it shows in the UI). Twilio's status is kept with the call. Calls recgate
   * does not know, and other statuses, change nothing. `known`: the call as the caller just read it
   * (`undefined`: not registered), so it is not read twice; read here when the argument is left out.
   */
  async statusCallback(
    report: RecordingStatusReport,
    ...known: [CallRecord | undefined] | []
  ): Promise<StatusOutcome> {
    const call = known.length === 1 ? known[0] : await this.#log.get(report.callSid);
    if (call === undefined) return 'ignored';
    if (report.status === 'completed') {
      if (playsOwnRecording(call)) return 'ignored';
      await this.#log.setResolution(report.callSid, {
        recordingState: 'available',
        recordingSid: report.recordingSid,
        recordingOwnerCallSid: report.callSid,
        recordingDurationS: report.durationS,
        recordingStatus: 'completed',
      });
      return 'stored';
    }
    if (report.status === 'deleted' || report.status === 'absent' || report.status === 'failed') {
      await this.gone(report.recordingSid, report.status);
      // A call that had found no recording yet remembers why: Twilio made none (absent) or failed to.
      if (report.status !== 'deleted' && call.recordingSid === null) {
        await this.#log.setResolution(report.callSid, {
          recordingState: 'absent',
          recordingStatus: report.status,
        });
      }
      return 'deleted';
    }
    return 'ignored';
  }

  /**
   * An operator purges the recording of `call`: the call, and every call playing the same recording, is
   * marked, so no play fetches it again. Resolves to the owner call whose file holds it (the file to
   * remove), and how many calls were marked.
   */
  async purged(call: CallRecord): Promise<{ owner: CallSid; marked: number }> {
    const marked = await this.#log.markPurged(call.callSid, call.recordingSid);
    return { owner: call.recordingOwnerCallSid ?? call.callSid, marked };
  }

  /**
   * The recording is gone at the upstream: terminal, for every call that plays it. `status` is what Twilio
   * said, when it said it by webhook (`deleted`, `absent`, `failed`).
   */
  async gone(recordingSid: RecordingSid, status?: string): Promise<void> {
    await this.#log.setResolutionByRecording(recordingSid, {
      recordingState: 'deleted',
      ...(status === undefined ? {} : { recordingStatus: status }),
    });
  }

  /**
   * Twilio deleted recording `recordingSid` of owner call `owner`: removes every local variant of it (the
   * `upstream_deleted` removal, logged and counted by the cache), unless the operator keeps such copies. A
   * file of the owner that holds another recording stays. Rejects as {@link RecordingCache.remove} does
   * (RECGATE_LOCK_TIMEOUT when a download keeps the lock); the call stays marked, so nothing serves it.
   */
  async removeDeletedCopies(owner: CallSid, recordingSid: RecordingSid, log?: Logger): Promise<void> {
    if (this.#copies === undefined || this.#copies.keep) return;
    await this.#copies.cache.remove(owner, 'upstream_deleted', { log, onlyRecording: recordingSid });
  }

  /**
   * A download of `ref` (any variant; a HEAD of it at the upstream too) failed with `err`: decides what that
   * says about the recording. Deleted at the upstream (RECGATE_RECORDING_GONE, which the client checks
   * against the recording's metadata, so never a variant Twilio cannot make) is remembered for every call
   * playing it, then its local copies go as for the webhook ({@link removeDeletedCopies}). A removal that
   * fails is logged (`upstream_delete_remove_failed`) rather than thrown, so the caller still answers with
   * `err`; the copy is never served, and a purge removes it. Anything else (an outage, a full disk) says
   * nothing. Resolves once the copies are gone.
   */
  async downloadFailed(ref: RecordingRef, err: unknown, log?: Logger): Promise<void> {
    if (!isRecgateError(err) || err.code !== 'RECGATE_RECORDING_GONE') return;
    await this.gone(ref.recordingSid);
    try {
      await this.removeDeletedCopies(ref.ownerCallSid, ref.recordingSid, log);
    } catch (removeErr) {
      (log ?? this.#copies?.logger)?.warn(
        {
          event: 'upstream_delete_remove_failed',
          callSid: ref.ownerCallSid,
          recordingSid: ref.recordingSid,
          err: removeErr,
        },
        'Could not remove the local copy of a recording deleted at Twilio',
      );
    }
  }

  /**
   * Registers a call or updates it (the admin API). A parent registered to another business is refused
   * with RECGATE_FORBIDDEN: a child plays its parent's recording, so the link would hand that business's
   * recording over (a parent nobody registered yet is allowed; if another business registers it later, the
   * resolver stops following it). A call whose parent changes forgets a resolution that came from the old
   * parent; a changed `recordingSid` resets the resolution (the call log does that).
   */
  async register(input: CallUpsert): Promise<{ call: CallRecord; created: boolean }> {
    if (input.parentCallSid) {
      const parent = await this.#log.get(input.parentCallSid);
      if (parent && parent.businessId !== input.businessId) {
        throw createError('RECGATE_FORBIDDEN', {
          message: 'parent_call_sid names a call registered to another business',
        });
      }
    }
    const before = await this.#log.get(input.callSid);
    let call = await this.#log.upsert(input);
    const parentChanged =
      before !== undefined &&
      input.parentCallSid !== undefined &&
      before.parentCallSid !== call.parentCallSid;
    const followedOldParent =
      before?.parentCallSid != null &&
      before.recordingOwnerCallSid !== null &&
      before.recordingOwnerCallSid !== before.callSid &&
      call.recordingSid === before.recordingSid;
    if (parentChanged && followedOldParent) {
      await this.#log.setResolution(input.callSid, {
        recordingState: 'unknown',
        recordingSid: null,
        recordingOwnerCallSid: null,
      });
      call = (await this.#log.get(input.callSid)) ?? call;
    }
    return { call, created: before === undefined };
  }
}

/** Whether the call plays a completed recording of its own (not one of its parent's). */
function playsOwnRecording(call: CallRecord): boolean {
  return (
    call.recordingState === 'available' &&
    call.recordingSid !== null &&
    (call.recordingOwnerCallSid === null || call.recordingOwnerCallSid === call.callSid)
  );
}
