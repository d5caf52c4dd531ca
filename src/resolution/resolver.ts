/**
 * Recording resolution: which recording plays for a call, and which call owns it.
 *
 * Order: the call log's `recording_sid`; else the upstream's recordings of the call; else the same for
 * its parent call (a `<Dial>` child leg's recording usually lives on the parent). The parent comes from
 * the call log, or, if the log does not know it, from the upstream's call resource. What is found is
 * remembered (through `state.ts`, the one writer of it), so later plays cost no upstream lookup. The owner's SID names the file
 * (`{owner}.mp3`): a child's request reads the parent's file and never writes a copy under its own name.
 *
 * Accounts: with `accounts` (src/accounts/directory.ts), every upstream lookup for a call goes to its
 * business's Twilio account, the parent-call fallback included, so it never finds another account's call;
 * the ref names that account, and the download reads the recording from it.
 *
 * Tenancy: one Twilio account may serve several businesses, so Twilio's parent links cross businesses. A call is
 * only ever served a recording owned by itself, by a call nobody registered, or by a call registered to
 * its own business. A parent (or owner) registered to another business is never followed, whoever names
 * it, and a stored resolution naming another call as owner is checked again on every play, because that
 * call may have been registered to another business since. Either way the answer is RECGATE_NOT_FOUND,
 * exactly as for a call without a recording.
 */
import type { Logger } from 'pino';
import type { CallLog, CallRecord } from '../call-log/call-log.js';
import { createError } from '../errors.js';
import { type LazySignal, signalOf } from '../io/abort.js';
import type { RecordingRef } from '../recordings/cache.js';
import type { CallSid, RecordingSid } from '../sid.js';
import type { Upstream, UpstreamRecording } from '../upstream/upstream.js';

/** Which account, and which client of it, serves a business (src/accounts/directory.ts). */
export interface BusinessUpstreams {
  /** At once when it knows, else a promise (see AccountDirectory.upstreamFor). */
  upstreamFor(
    businessId: string,
  ): { account: string; upstream: Upstream } | Promise<{ account: string; upstream: Upstream }>;
}

import type { RecordingState } from './state.js';

export interface ResolverOptions {
  callLog: CallLog;
  /** Where what a lookup finds is recorded. */
  state: RecordingState;
  upstream: Upstream;
  /**
   * Each business's own account and client; `upstream` then serves no lookup. @default none: `upstream`
   * serves every business, and refs name no account
   */
  accounts?: BusinessUpstreams | undefined;
  /**
   * How long a negative answer ("no recording yet", "still processing") is trusted before the upstream is
   * asked again, in ms. @default 15000
   */
  negativeTtlMs?: number;
  /** Seconds a client is told to wait (Retry-After) while a recording is processing. @default 5 */
  retryAfterS?: number;
}

const PROCESSING = new Set(['processing', 'in-progress', 'paused', 'stopped']);

/**
 * One lookup shared by every concurrent request for a call. It runs on its own signal, not on a request's,
 * so one client going away fails nobody else; it is aborted only when every request waiting on it has left.
 */
interface SharedLookup {
  readonly promise: Promise<RecordingRef>;
  readonly controller: AbortController;
  /** Requests waiting on it (those without a signal included: they never leave). */
  waiting: number;
}

export class RecordingResolver {
  readonly #log: CallLog;
  readonly #state: RecordingState;
  readonly #upstream: Upstream;
  readonly #accounts: BusinessUpstreams | undefined;
  readonly #negativeTtlMs: number;
  readonly #retryAfterS: number;
  /** In-flight lookups, so a burst of first plays asks the upstream once. */
  readonly #inflight = new Map<CallSid, SharedLookup>();

  constructor(options: ResolverOptions) {
    this.#log = options.callLog;
    this.#state = options.state;
    this.#upstream = options.upstream;
    this.#accounts = options.accounts;
    this.#negativeTtlMs = options.negativeTtlMs ?? 15_000;
    this.#retryAfterS = options.retryAfterS ?? 5;
    if (!Number.isFinite(this.#negativeTtlMs) || this.#negativeTtlMs < 0) {
      throw new TypeError('options.negativeTtlMs must be a non-negative number');
    }
  }

  /**
   * The recording to play for a call the caller is allowed to see. Throws RECGATE_NOT_FOUND (no recording
   * on the call or its parent), RECGATE_RECORDING_GONE (deleted upstream), RECGATE_RECORDING_PURGED (an
   * operator purged it), RECGATE_RECORDING_NOT_READY
   * (still processing; carries Retry-After) and the upstream's errors. Concurrent calls for one call share
   * one lookup; `signal` ends only this caller's wait, which then rejects with the signal's reason. A
   * function is called only when the call must wait for a lookup: a stored resolution needs no signal.
   */
  async resolve(call: CallRecord, lazySignal?: LazySignal, log?: Logger): Promise<RecordingRef> {
    const target = await this.#accounts?.upstreamFor(call.businessId);
    const known = await this.#fromRecord(call, log);
    if (known) return withAccount(known, target?.account);
    const signal = signalOf(lazySignal);
    signal?.throwIfAborted();
    const shared =
      this.#inflight.get(call.callSid) ?? this.#startLookup(call, target?.upstream ?? this.#upstream, log);
    return withAccount(await this.#join(call.callSid, shared, signal), target?.account);
  }

  /**
   * {@link resolve}'s answer at once, when it needs nothing that waits: the call's own recording, stored and
   * not purged, and the business's account remembered (the warm play). `undefined` otherwise: then
   * `resolve` decides, errors included.
   */
  resolveNow(call: CallRecord): RecordingRef | undefined {
    if (call.purgedAt !== null || call.recordingState !== 'available') return undefined;
    const { recordingSid, recordingOwnerCallSid: owner } = call;
    if (!recordingSid || owner !== call.callSid) return undefined;
    const target = this.#accounts?.upstreamFor(call.businessId);
    if (target instanceof Promise) {
      // resolve() asks again and shares the same load; a failure is its to report, not this copy's.
      target.catch(() => undefined);
      return undefined;
    }
    return withAccount({ recordingSid, ownerCallSid: owner }, target?.account);
  }

  /** What the stored resolution says, if it is still to be trusted. */
  async #fromRecord(call: CallRecord, log?: Logger): Promise<RecordingRef | undefined> {
    if (call.purgedAt !== null) throw createError('RECGATE_RECORDING_PURGED');
    switch (call.recordingState) {
      case 'available':
        if (call.recordingSid && call.recordingOwnerCallSid) {
          const check = this.#requireFollowable(call, call.recordingOwnerCallSid, log);
          if (check !== undefined) await check;
          return { recordingSid: call.recordingSid, ownerCallSid: call.recordingOwnerCallSid };
        }
        return undefined;
      case 'deleted':
        // Deletions spread to every call playing the recording, so say "gone" only to the owner's business.
        if (call.recordingOwnerCallSid) await this.#requireFollowable(call, call.recordingOwnerCallSid, log);
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

  #startLookup(call: CallRecord, upstream: Upstream, log?: Logger): SharedLookup {
    const controller = new AbortController();
    const shared: SharedLookup = {
      promise: this.#lookup(call, upstream, controller.signal, log),
      controller,
      waiting: 0,
    };
    this.#inflight.set(call.callSid, shared);
    const forget = () => this.#forget(call.callSid, shared);
    shared.promise.then(forget, forget);
    return shared;
  }

  /** Waits on a shared lookup until it settles or `signal` fires, whichever comes first. */
  #join(callSid: CallSid, shared: SharedLookup, signal?: AbortSignal): Promise<RecordingRef> {
    shared.waiting++;
    if (!signal) return shared.promise;
    return new Promise<RecordingRef>((resolve, reject) => {
      const leave = () => {
        reject(signal.reason);
        if (--shared.waiting > 0) return;
        // Nobody waits any more: a later request starts afresh rather than joining an aborted lookup.
        this.#forget(callSid, shared);
        shared.controller.abort();
      };
      signal.addEventListener('abort', leave, { once: true });
      shared.promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', leave));
    });
  }

  #forget(callSid: CallSid, shared: SharedLookup): void {
    if (this.#inflight.get(callSid) === shared) this.#inflight.delete(callSid);
  }

  #throwNegative(state: 'absent' | 'processing'): never {
    if (state === 'processing') {
      throw createError('RECGATE_RECORDING_NOT_READY', {
        headers: { 'retry-after': String(this.#retryAfterS) },
      });
    }
    throw createError('RECGATE_NOT_FOUND');
  }

  async #lookup(
    call: CallRecord,
    upstream: Upstream,
    signal?: AbortSignal,
    log?: Logger,
  ): Promise<RecordingRef> {
    if (call.recordingSid) {
      // Set explicitly (admin API); it belongs to this call unless a lookup said otherwise.
      const owner = call.recordingOwnerCallSid ?? call.callSid;
      await this.#requireFollowable(call, owner, log);
      return this.#remember(call.callSid, call.recordingSid, owner);
    }
    let sawProcessing = false;
    const own = pick(await upstream.listCallRecordings(call.callSid, signal));
    if (own.completed) return this.#remember(call.callSid, own.completed.sid, call.callSid);
    sawProcessing ||= own.processing;

    const parentSid =
      call.parentCallSid ?? (await upstream.getCall(call.callSid, signal))?.parentCallSid ?? null;
    if (parentSid) {
      const theirs = await this.#fromParent(call, parentSid, upstream, signal, log);
      if (theirs === 'processing') sawProcessing = true;
      else if (theirs) return this.#remember(call.callSid, theirs.recordingSid, theirs.ownerCallSid);
    }
    const state = sawProcessing ? 'processing' : 'absent';
    log?.info({ event: 'recording_unresolved', callSid: call.callSid, state }, 'no playable recording');
    await this.#state.unresolved(call.callSid, state);
    this.#throwNegative(state);
  }

  /**
   * The parent's recording for `call`: from the parent's stored resolution, else from the upstream.
   * `undefined` when the parent has none, or when the parent or the call owning its recording is registered
   * to another business; `processing` when the upstream lists one still processing.
   */
  async #fromParent(
    call: CallRecord,
    parentSid: CallSid,
    upstream: Upstream,
    signal?: AbortSignal,
    log?: Logger,
  ): Promise<RecordingRef | 'processing' | undefined> {
    const parent = await this.#log.get(parentSid);
    if (parent && parent.businessId !== call.businessId) {
      this.#logRefused(call, parentSid, log);
      return undefined;
    }
    if (parent?.recordingSid) {
      const owner = parent.recordingOwnerCallSid ?? parentSid;
      if (owner !== parentSid && !(await this.#mayFollow(call, owner))) {
        this.#logRefused(call, owner, log);
        return undefined;
      }
      return { recordingSid: parent.recordingSid, ownerCallSid: owner };
    }
    const theirs = pick(await upstream.listCallRecordings(parentSid, signal));
    if (theirs.completed) return { recordingSid: theirs.completed.sid, ownerCallSid: parentSid };
    return theirs.processing ? 'processing' : undefined;
  }

  /**
   * Whether `owner` may serve `call`'s recording: it is the call itself, a call nobody registered (it is in
   * the same upstream account), or a call of the same business. One indexed call-log lookup, and none for
   * the call itself.
   */
  async #mayFollow(call: CallRecord, owner: CallSid): Promise<boolean> {
    if (owner === call.callSid) return true;
    const registered = await this.#log.get(owner);
    return registered === undefined || registered.businessId === call.businessId;
  }

  /**
   * Throws RECGATE_NOT_FOUND, as for a call without a recording, unless {@link #mayFollow}. A call's own
   * recording (the usual case, and every warm play of one) needs no lookup and returns at once, not a
   * promise.
   */
  #requireFollowable(call: CallRecord, owner: CallSid, log?: Logger): Promise<void> | undefined {
    if (owner === call.callSid) return undefined;
    return this.#mayFollow(call, owner).then((may) => {
      if (may) return;
      this.#logRefused(call, owner, log);
      throw createError('RECGATE_NOT_FOUND');
    });
  }

  #logRefused(call: CallRecord, other: CallSid, log?: Logger): void {
    log?.warn(
      { event: 'cross_business_link', callSid: call.callSid, otherCallSid: other },
      'not following a call registered to another business',
    );
  }

  #remember(callSid: CallSid, recordingSid: RecordingSid, owner: CallSid): Promise<RecordingRef> {
    return this.#state.found(callSid, recordingSid, owner);
  }
}

/** The ref, naming the account the recording is read from when the resolver knows it. */
function withAccount(ref: RecordingRef, account: string | undefined): RecordingRef {
  return account === undefined ? ref : { ...ref, account };
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
