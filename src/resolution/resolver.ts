/**
 * Recording resolution: which recording plays for a call, and which call owns it.
 *
 * Order: the call log's `recording_sid`; else the upstream's recordings of the call; else the same for
 * its parent call (a `<Dial>` child leg's recording usually lives on the parent). The parent comes from
 * the call log, or, if the log does not know it, from the upstream's call resource. What is found is
 * remembered in the call log, so later plays cost no upstream lookup. The owner's SID names the file
 * (`{owner}.mp3`): a child's request reads the parent's file and never writes a copy under its own name.
 */
import type { Logger } from 'pino';
import type { CallLog, CallRecord, RecordingResolution } from '../call-log/call-log.js';
import { createError } from '../errors.js';
import type { RecordingRef } from '../recordings/cache.js';
import type { CallSid, RecordingSid } from '../sid.js';
import type { Upstream, UpstreamRecording } from '../upstream/upstream.js';

export interface ResolverOptions {
  callLog: CallLog;
  upstream: Upstream;
  /**
   * How long a negative answer ("no recording yet", "still processing") is trusted before the upstream is
   * asked again, in ms. @default 15000
   */
  negativeTtlMs?: number;
  /** Seconds a client is told to wait (Retry-After) while a recording is processing. @default 5 */
  retryAfterS?: number;
}

const PROCESSING = new Set(['processing', 'in-progress', 'paused', 'stopped']);

export class RecordingResolver {
  readonly #log: CallLog;
  readonly #upstream: Upstream;
  readonly #negativeTtlMs: number;
  readonly #retryAfterS: number;
  /** In-flight lookups, so a burst of first plays asks the upstream once. */
  readonly #inflight = new Map<CallSid, Promise<RecordingRef>>();

  constructor(options: ResolverOptions) {
    this.#log = options.callLog;
    this.#upstream = options.upstream;
    this.#negativeTtlMs = options.negativeTtlMs ?? 15_000;
    this.#retryAfterS = options.retryAfterS ?? 5;
    if (!Number.isFinite(this.#negativeTtlMs) || this.#negativeTtlMs < 0) {
      throw new TypeError('options.negativeTtlMs must be a non-negative number');
    }
  }

  /**
   * The recording to play for a call the caller is allowed to see. Throws RECGATE_NOT_FOUND (no recording
   * on the call or its parent), RECGATE_RECORDING_GONE (deleted upstream), RECGATE_RECORDING_NOT_READY
   * (still processing; carries Retry-After) and the upstream's errors.
   */
  async resolve(call: CallRecord, signal?: AbortSignal, log?: Logger): Promise<RecordingRef> {
    const known = this.#fromRecord(call);
    if (known) return known;
    let pending = this.#inflight.get(call.callSid);
    if (!pending) {
      pending = this.#lookup(call, signal, log).finally(() => this.#inflight.delete(call.callSid));
      this.#inflight.set(call.callSid, pending);
    }
    return pending;
  }

  /** Records that a recording is gone upstream, for every call that plays it. */
  async markGone(recordingSid: RecordingSid): Promise<void> {
    await this.#log.setResolutionByRecording(recordingSid, { recordingState: 'deleted' });
  }

  #fromRecord(call: CallRecord): RecordingRef | undefined {
    switch (call.recordingState) {
      case 'available':
        if (call.recordingSid && call.recordingOwnerCallSid) {
          return { recordingSid: call.recordingSid, ownerCallSid: call.recordingOwnerCallSid };
        }
        return undefined;
      case 'deleted':
        throw createError('RECGATE_RECORDING_GONE');
      case 'absent':
      case 'processing':
        if (Date.now() - Date.parse(call.updatedAt) < this.#negativeTtlMs)
          this.#throwNegative(call.recordingState);
        return undefined;
      default:
        return undefined;
    }
  }

  #throwNegative(state: 'absent' | 'processing'): never {
    if (state === 'processing') {
      throw createError('RECGATE_RECORDING_NOT_READY', {
        headers: { 'retry-after': String(this.#retryAfterS) },
      });
    }
    throw createError('RECGATE_NOT_FOUND');
  }

  async #lookup(call: CallRecord, signal?: AbortSignal, log?: Logger): Promise<RecordingRef> {
    if (call.recordingSid) {
      // Set explicitly (admin API); it belongs to this call unless a lookup said otherwise.
      return this.#remember(call.callSid, call.recordingSid, call.recordingOwnerCallSid ?? call.callSid);
    }
    let sawProcessing = false;
    const own = pick(await this.#upstream.listCallRecordings(call.callSid, signal));
    if (own.completed) return this.#remember(call.callSid, own.completed.sid, call.callSid);
    sawProcessing ||= own.processing;

    const parentSid =
      call.parentCallSid ?? (await this.#upstream.getCall(call.callSid, signal))?.parentCallSid ?? null;
    if (parentSid) {
      const parent = await this.#log.get(parentSid);
      if (parent?.recordingState === 'available' && parent.recordingSid && parent.recordingOwnerCallSid) {
        return this.#remember(call.callSid, parent.recordingSid, parent.recordingOwnerCallSid);
      }
      if (parent?.recordingSid) return this.#remember(call.callSid, parent.recordingSid, parentSid);
      const theirs = pick(await this.#upstream.listCallRecordings(parentSid, signal));
      if (theirs.completed) return this.#remember(call.callSid, theirs.completed.sid, parentSid);
      sawProcessing ||= theirs.processing;
    }
    const state = sawProcessing ? 'processing' : 'absent';
    log?.info({ event: 'recording_unresolved', callSid: call.callSid, state }, 'no playable recording');
    await this.#log.setResolution(call.callSid, { recordingState: state });
    this.#throwNegative(state);
  }

  async #remember(callSid: CallSid, recordingSid: RecordingSid, owner: CallSid): Promise<RecordingRef> {
    const resolution: RecordingResolution = {
      recordingState: 'available',
      recordingSid,
      recordingOwnerCallSid: owner,
    };
    await this.#log.setResolution(callSid, resolution);
    return { recordingSid, ownerCallSid: owner };
  }
}

/** The oldest completed recording (a call's first recording is the conversation), and whether any is still processing. */
function pick(recordings: UpstreamRecording[]): { completed?: UpstreamRecording; processing: boolean } {
  const completed = recordings
    .filter((r) => r.status === 'completed')
    .sort(
      (a, b) =>
        Date.parse(a.dateCreated ?? '') - Date.parse(b.dateCreated ?? '') || a.sid.localeCompare(b.sid),
    );
  return { completed: completed[0], processing: recordings.some((r) => PROCESSING.has(r.status)) };
}
