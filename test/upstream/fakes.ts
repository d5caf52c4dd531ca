/**
 * An in-process {@link Upstream} for the resolver's tests: Twilio's calls and their recordings, with the
 * timing of `listCallRecordings` under the test's control. It passes the calls part of the Upstream
 * contract (contract.ts); for media, see `FakeUpstream` in test/recordings/helpers.ts.
 */
import { randomBytes } from 'node:crypto';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import type {
  ListRecordingsOptions,
  Upstream,
  UpstreamCall,
  UpstreamRecording,
} from '../../src/upstream/upstream.js';

export function newCallSid(): CallSid {
  return `CA${randomBytes(16).toString('hex')}` as CallSid;
}

export function newRecordingSid(): RecordingSid {
  return `RE${randomBytes(16).toString('hex')}` as RecordingSid;
}

/** A promise the test settles by hand. */
export function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * Calls and recordings held in memory (`listRecordings` filters them by `dateCreated`). Like TwilioClient, an unknown call is `undefined` to `getCall` and
 * has no recordings, and a request rejects with its signal's reason once the signal aborts. While `gate` is
 * set, every `listCallRecordings` waits for it, and `arrived` resolves when one starts waiting. It serves
 * no media: `fetchMedia` and `headMedia` reject.
 */
export class FakeCallsUpstream implements Upstream {
  /** Every call the upstream knows, with its parent (`null` for none). */
  readonly calls = new Map<CallSid, CallSid | null>();
  readonly recordings = new Map<CallSid, UpstreamRecording[]>();
  /** Every request, as `getCall CA…` or `listCallRecordings CA…`. */
  readonly asked: string[] = [];
  /** The signal of each `listCallRecordings`. */
  readonly signals: (AbortSignal | undefined)[] = [];
  gate: Promise<void> | undefined;
  arrived = deferred();
  #created = 0;

  /** Makes a call known (with `parent`, a child leg of it; the parent becomes known too) and returns it. */
  addCall(sid: CallSid = newCallSid(), parent: CallSid | null = null): CallSid {
    if (parent !== null && !this.calls.has(parent)) this.calls.set(parent, null);
    this.calls.set(sid, parent);
    return sid;
  }

  /**
   * Adds a recording to `call` (known from then on), created at `createdAt`, or else a second after the one
   * before.
   */
  addRecording(call: CallSid, status = 'completed', createdAt?: Date): RecordingSid {
    if (!this.calls.has(call)) this.addCall(call);
    const sid = newRecordingSid();
    const dateCreated = (createdAt ?? new Date(Date.UTC(2026, 0, 1) + 1000 * this.#created++)).toISOString();
    const done = status === 'completed';
    const list = this.recordings.get(call) ?? [];
    list.push({ sid, callSid: call, status, durationS: done ? 10 : null, dateCreated });
    this.recordings.set(call, list);
    return sid;
  }

  async getCall(sid: CallSid, signal?: AbortSignal): Promise<UpstreamCall | undefined> {
    this.asked.push(`getCall ${sid}`);
    signal?.throwIfAborted();
    const parent = this.calls.get(sid);
    if (parent === undefined) return undefined;
    return {
      sid,
      parentCallSid: parent,
      direction: parent === null ? 'inbound' : 'outbound-dial',
      from: null,
      to: null,
      startTime: null,
      durationS: null,
      status: 'completed',
    };
  }

  async listCallRecordings(sid: CallSid, signal?: AbortSignal): Promise<UpstreamRecording[]> {
    this.asked.push(`listCallRecordings ${sid}`);
    this.signals.push(signal);
    if (this.gate) {
      this.arrived.resolve();
      const aborted = new Promise<never>((_, reject) => {
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
      await Promise.race([this.gate, aborted]);
    }
    signal?.throwIfAborted();
    return [...(this.recordings.get(sid) ?? [])];
  }

  async listRecordings(options: ListRecordingsOptions = {}): Promise<UpstreamRecording[]> {
    this.asked.push('listRecordings');
    options.signal?.throwIfAborted();
    const after = options.dateCreatedAfter?.getTime() ?? Number.NEGATIVE_INFINITY;
    const before = options.dateCreatedBefore?.getTime() ?? Number.POSITIVE_INFINITY;
    return [...this.recordings.values()]
      .flat()
      .filter((r) => {
        const at = Date.parse(r.dateCreated ?? '');
        return at >= after && at <= before;
      })
      .sort((a, b) => Date.parse(b.dateCreated ?? '') - Date.parse(a.dateCreated ?? ''));
  }

  async fetchMedia(): Promise<never> {
    throw new Error('FakeCallsUpstream serves no media; FakeUpstream in test/recordings/helpers.ts does');
  }

  async headMedia(): Promise<never> {
    throw new Error('FakeCallsUpstream serves no media; FakeUpstream in test/recordings/helpers.ts does');
  }

  async close(): Promise<void> {}
}
