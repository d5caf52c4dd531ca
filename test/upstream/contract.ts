/**
 * The contract every {@link Upstream} must pass: TwilioClient against the emulator, and each fake the cache
 * and resolver tests stand on, so that a fake cannot promise what the client does not do. A test file calls
 * {@link upstreamContractTests} with a {@link UpstreamSubject}.
 *
 * Two parts, each run when the subject implements it: media (`fetchMedia`, all the recording cache uses) and
 * calls (`getCall`, `listCallRecordings`, what the resolver uses, and `listRecordings`, what
 * `recgate prefetch --since` uses). The suite's title names the parts run.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import type { MediaResponse, Upstream } from '../../src/upstream/upstream.js';
import { readAll } from './helpers.js';

/** How the recording of one media case must be served. */
export interface MediaSetup {
  /** Bytes of the recording. */
  size: number;
  /** Whether the upstream honours Range and says so with `Accept-Ranges: bytes`. */
  ranges: boolean;
  /** Delay before the response headers. */
  headersDelayMs: number;
  /** The body trickles (no faster than about 200 KB/s), so that a test can act while it streams. */
  slowBody: boolean;
  /**
   * The connection breaks once a body from byte 0 reaches this offset: by a reset, or by a clean close
   * (FIN) before Content-Length.
   */
  breakAt: { offset: number; how: 'reset' | 'close' } | undefined;
}

export interface MediaFixture {
  upstream: Pick<Upstream, 'fetchMedia' | 'headMedia'>;
  sid: RecordingSid;
  /** The recording's bytes. */
  data: Buffer;
  /** The ETag, Last-Modified and Content-Type the upstream sends with the recording. */
  announced: { etag: string; lastModified: string; contentType: string };
}

export interface CallsFixture {
  upstream: Upstream;
  /** Makes a call known upstream, a child leg of `parent` if given, and returns its SID. */
  addCall(parent?: CallSid): Promise<CallSid>;
  /** Adds a recording in this state to a known call, created at `createdAt` if given; returns its SID. */
  addRecording(call: CallSid, status: 'completed' | 'processing', createdAt?: Date): Promise<RecordingSid>;
  /** Recordings on one page of the upstream's list (it pages beyond). @default 1: it does not page */
  pageSize?: number;
}

/**
 * What a subject implements. A fake that implements one part runs only that part's cases (no case is
 * skipped): the resolver's fake serves no media, the cache's fakes only media.
 */
export interface UpstreamSubject {
  /** Serves one recording as `setup` asks, cleaned up after the test. */
  media?: (t: TestContext, setup: MediaSetup) => Promise<MediaFixture>;
  /** An upstream with no calls yet, cleaned up after the test. */
  calls?: (t: TestContext) => Promise<CallsFixture>;
  /** An upstream with a dual-channel and a mono recording, for `MediaRequest.variant`. */
  variants?: (t: TestContext) => Promise<VariantsFixture>;
}

export interface VariantsFixture {
  upstream: Pick<Upstream, 'fetchMedia' | 'headMedia'>;
  /** A recording made dual-channel. */
  dual: RecordingSid;
  /** A recording made mono. */
  mono: RecordingSid;
}

const SIZE = 100_000;
const DEFAULT_SETUP: MediaSetup = {
  size: SIZE,
  ranges: true,
  headersDelayMs: 0,
  slowBody: false,
  breakAt: undefined,
};

const UNKNOWN_CALL = `CA${'0'.repeat(32)}` as CallSid;

export function upstreamContractTests(name: string, subject: UpstreamSubject): void {
  const parts = [subject.media && 'fetchMedia', subject.calls && 'calls', subject.variants && 'variants']
    .filter(Boolean)
    .join(' and ');
  describe(`Upstream contract (${parts}): ${name}`, () => {
    it('matches interface', async (t) => {
      const { media, calls } = subject;
      if (media !== undefined) {
        const { upstream } = await media(t, DEFAULT_SETUP);
        assert.equal(typeof upstream.fetchMedia, 'function');
        assert.equal(typeof upstream.headMedia, 'function');
      }
      if (calls !== undefined) {
        const { upstream } = await calls(t);
        for (const method of [
          'getCall',
          'listCallRecordings',
          'listRecordings',
          'fetchMedia',
          'headMedia',
          'close',
        ] as const) {
          assert.equal(typeof upstream[method], 'function', method);
        }
      }
      assert.ok(media !== undefined || calls !== undefined, 'a subject implements at least one part');
    });
    if (subject.media !== undefined) mediaCases(subject.media);
    if (subject.calls !== undefined) callsCases(subject.calls);
    if (subject.variants !== undefined) variantCases(subject.variants);
  });
}

/** Channels of a body: from a WAV's fmt chunk, or from the first MPEG frame header's channel mode. */
function channelsOf(body: Buffer): number {
  if (body.toString('latin1', 0, 4) === 'RIFF') return body.readUInt16LE(22);
  let at = 0;
  if (body.toString('latin1', 0, 3) === 'ID3') {
    at = 10 + ((body[6]! << 21) | (body[7]! << 14) | (body[8]! << 7) | body[9]!);
  }
  while (at < body.length - 4 && !(body[at] === 0xff && (body[at + 1]! & 0xe0) === 0xe0)) at++;
  return body[at + 3]! >>> 6 === 3 ? 1 : 2;
}

function variantCases(variants: NonNullable<UpstreamSubject['variants']>): void {
  describe('variants', () => {
    it('each variant of a dual-channel recording: its format, its channels, the size its HEAD says', async (t) => {
      const { upstream, dual } = await variants(t);
      const seen = new Set<string>();
      for (const variant of [
        { channels: 1, format: 'mp3' },
        { channels: 2, format: 'mp3' },
        { channels: 1, format: 'wav' },
        { channels: 2, format: 'wav' },
      ] as const) {
        const what = JSON.stringify(variant);
        const response = await upstream.fetchMedia(dual, { variant });
        const body = await readAll(response.body);
        assert.equal(response.status, 200, what);
        assert.equal(body.toString('latin1', 0, 4) === 'RIFF', variant.format === 'wav', what);
        assert.equal(channelsOf(body), variant.channels, what);
        assert.equal((await upstream.headMedia(dual, undefined, variant)).size, body.length, what);
        seen.add(body.toString('base64'));
      }
      assert.equal(seen.size, 4, 'four different files');
    });

    it('a mono recording asked for as dual-channel: RECGATE_VARIANT_UNAVAILABLE, from fetchMedia and headMedia', async (t) => {
      const { upstream, mono } = await variants(t);
      const unavailable = (err: unknown) => (err as { code?: string }).code === 'RECGATE_VARIANT_UNAVAILABLE';
      for (const format of ['mp3', 'wav'] as const) {
        await assert.rejects(upstream.fetchMedia(mono, { variant: { channels: 2, format } }), unavailable);
        await assert.rejects(upstream.headMedia(mono, undefined, { channels: 2, format }), unavailable);
      }
      const mixed = await upstream.fetchMedia(mono, { variant: { channels: 1, format: 'wav' } });
      assert.equal(channelsOf(await readAll(mixed.body)), 1);
    });
  });
}

function mediaCases(media: NonNullable<UpstreamSubject['media']>): void {
  const serve = (t: TestContext, setup: Partial<MediaSetup> = {}) => media(t, { ...DEFAULT_SETUP, ...setup });

  describe('headMedia', () => {
    it('the size and what the upstream announces, without the body', async (t) => {
      const { upstream, sid, announced } = await serve(t);
      const head = await upstream.headMedia(sid);
      assert.deepEqual(head, {
        size: SIZE,
        etag: announced.etag,
        lastModified: announced.lastModified,
        contentType: announced.contentType,
        acceptsRanges: true,
      });
    });

    it('without Range support upstream: acceptsRanges false', async (t) => {
      const { upstream, sid } = await serve(t, { ranges: false });
      assert.equal((await upstream.headMedia(sid)).acceptsRanges, false);
    });

    it('an already aborted signal rejects with an AbortError', async (t) => {
      const { upstream, sid } = await serve(t);
      await assert.rejects(upstream.headMedia(sid, AbortSignal.abort()), isAbortError);
    });
  });

  describe('fetchMedia', () => {
    it('without a range: 200 with the whole recording and what the upstream announces', async (t) => {
      const { upstream, sid, data, announced } = await serve(t);
      const res = await upstream.fetchMedia(sid);
      assertHead(res, { status: 200, start: 0, length: SIZE, totalSize: SIZE, acceptsRanges: true });
      assert.equal(res.etag, announced.etag);
      assert.equal(res.lastModified, announced.lastModified);
      assert.equal(res.contentType, announced.contentType);
      assert.ok((await readAll(res.body)).equals(data));
    });

    it('from an offset: 206 from exactly there, totalSize the whole recording', async (t) => {
      const { upstream, sid, data, announced } = await serve(t);
      const res = await upstream.fetchMedia(sid, { start: 60_000 });
      assertHead(res, { status: 206, start: 60_000, length: 40_000, totalSize: SIZE, acceptsRanges: true });
      assert.equal(res.etag, announced.etag);
      assert.ok((await readAll(res.body)).equals(data.subarray(60_000)));
    });

    it('with start and end: 206 with exactly those bytes', async (t) => {
      const { upstream, sid, data } = await serve(t);
      const res = await upstream.fetchMedia(sid, { start: 1000, end: 1999 });
      assertHead(res, { status: 206, start: 1000, length: 1000, totalSize: SIZE, acceptsRanges: true });
      assert.ok((await readAll(res.body)).equals(data.subarray(1000, 2000)));
    });

    it('with an ifRange that matches: 206, as a resumed download needs', async (t) => {
      const { upstream, sid, data, announced } = await serve(t);
      const res = await upstream.fetchMedia(sid, { start: 30_000, ifRange: announced.etag });
      assertHead(res, { status: 206, start: 30_000, length: 70_000, totalSize: SIZE, acceptsRanges: true });
      assert.ok((await readAll(res.body)).equals(data.subarray(30_000)));
    });

    it('with an ifRange that no longer matches: 200 with the whole recording', async (t) => {
      const { upstream, sid, data, announced } = await serve(t);
      const res = await upstream.fetchMedia(sid, { start: 30_000, ifRange: '"another-version"' });
      assertHead(res, { status: 200, start: 0, length: SIZE, totalSize: SIZE, acceptsRanges: true });
      assert.equal(res.etag, announced.etag);
      assert.ok((await readAll(res.body)).equals(data));
    });

    it('without Range support upstream: acceptsRanges false, a Range gets the whole recording (200)', async (t) => {
      const { upstream, sid, data } = await serve(t, { ranges: false });
      const whole = await upstream.fetchMedia(sid);
      assertHead(whole, { status: 200, start: 0, length: SIZE, totalSize: SIZE, acceptsRanges: false });
      await readAll(whole.body);
      const asked = await upstream.fetchMedia(sid, { start: 1000, end: 1999 });
      assertHead(asked, { status: 200, start: 0, length: SIZE, totalSize: SIZE, acceptsRanges: false });
      assert.ok((await readAll(asked.body)).equals(data));
    });

    for (const how of ['reset', 'close'] as const) {
      const what = how === 'reset' ? 'a connection reset' : 'a clean close before Content-Length';
      it(`${what} mid-body errors the body, after only the recording's own bytes`, async (t) => {
        const { upstream, sid, data } = await serve(t, { breakAt: { offset: 30_000, how } });
        const res = await upstream.fetchMedia(sid);
        const received: Buffer[] = [];
        await assert.rejects(
          async () => {
            for await (const chunk of res.body) received.push(chunk as Buffer);
          },
          (err: unknown) => err instanceof Error,
          'the body errors; it never ends early without an error',
        );
        const got = Buffer.concat(received);
        assert.ok(got.length < SIZE, `${got.length} bytes before the error`);
        assert.ok(got.equals(data.subarray(0, got.length)));
      });
    }

    it('an already aborted signal rejects with an AbortError', async (t) => {
      const { upstream, sid } = await serve(t);
      await assert.rejects(upstream.fetchMedia(sid, { signal: AbortSignal.abort() }), isAbortError);
    });

    it('aborting while waiting for the headers rejects promptly with an AbortError', async (t) => {
      const { upstream, sid } = await serve(t, { headersDelayMs: 5000 });
      const controller = new AbortController();
      const pending = upstream.fetchMedia(sid, { signal: controller.signal });
      setTimeout(() => controller.abort(), 50);
      const started = performance.now();
      await assert.rejects(pending, isAbortError);
      assert.ok(performance.now() - started < 2000, 'long before the headers would have come');
    });

    it('aborting while the body streams errors the body with an AbortError', async (t) => {
      const { upstream, sid } = await serve(t, { slowBody: true });
      const controller = new AbortController();
      const res = await upstream.fetchMedia(sid, { signal: controller.signal });
      const chunks = res.body[Symbol.asyncIterator]();
      assert.equal((await chunks.next()).done, false, 'a first chunk arrives');
      controller.abort();
      await assert.rejects(async () => {
        while (!(await chunks.next()).done);
      }, isAbortError);
    });
  });
}

function callsCases(calls: NonNullable<UpstreamSubject['calls']>): void {
  const open = (t: TestContext) => calls(t);

  describe('getCall and listCallRecordings', () => {
    it('an unknown call: getCall is undefined, listCallRecordings is empty', async (t) => {
      const { upstream } = await open(t);
      assert.equal(await upstream.getCall(UNKNOWN_CALL), undefined);
      assert.deepEqual(await upstream.listCallRecordings(UNKNOWN_CALL), []);
    });

    it('a call with a completed recording: no parent; the recording names the call', async (t) => {
      const { upstream, addCall, addRecording } = await open(t);
      const call = await addCall();
      const recording = await addRecording(call, 'completed');
      const got = await upstream.getCall(call);
      assert.equal(got?.sid, call);
      assert.equal(got?.parentCallSid, null);
      const list = await upstream.listCallRecordings(call);
      assert.equal(list.length, 1);
      assert.equal(list[0]?.sid, recording);
      assert.equal(list[0]?.callSid, call);
      assert.equal(list[0]?.status, 'completed');
      assertRecordingFields(list[0]!);
    });

    it('a child leg names its parent; each call lists only its own recordings', async (t) => {
      const { upstream, addCall, addRecording } = await open(t);
      const parent = await addCall();
      const child = await addCall(parent);
      const recording = await addRecording(parent, 'completed');
      assert.equal((await upstream.getCall(child))?.parentCallSid, parent);
      assert.equal((await upstream.getCall(parent))?.parentCallSid, null);
      assert.deepEqual(await upstream.listCallRecordings(child), []);
      assert.deepEqual(
        (await upstream.listCallRecordings(parent)).map((r) => [r.sid, r.callSid]),
        [[recording, parent]],
      );
    });

    it('completed and processing recordings are listed with their statuses', async (t) => {
      const { upstream, addCall, addRecording } = await open(t);
      const call = await addCall();
      const done = await addRecording(call, 'completed');
      const coming = await addRecording(call, 'processing');
      const list = await upstream.listCallRecordings(call);
      const statuses = new Map(list.map((r) => [r.sid, r.status]));
      assert.deepEqual(
        [statuses.get(done), statuses.get(coming), list.length],
        ['completed', 'processing', 2],
      );
      for (const r of list) assertRecordingFields(r);
    });

    it('more recordings than fit one page: every one listed, once', async (t) => {
      const { upstream, addCall, addRecording, pageSize = 1 } = await open(t);
      const call = await addCall();
      const made: RecordingSid[] = [];
      for (let i = 0; i <= pageSize; i++) made.push(await addRecording(call, 'completed'));
      const listed = (await upstream.listCallRecordings(call)).map((r) => r.sid);
      assert.deepEqual([...listed].sort(), [...made].sort());
    });

    it('an already aborted signal rejects with an AbortError', async (t) => {
      const { upstream, addCall } = await open(t);
      const call = await addCall();
      await assert.rejects(upstream.getCall(call, AbortSignal.abort()), isAbortError);
      await assert.rejects(upstream.listCallRecordings(call, AbortSignal.abort()), isAbortError);
    });
  });

  describe('listRecordings', () => {
    // Dates of their own, far from the other cases' recordings (an upstream may be shared between cases).
    const at = (day: number, time = '00:00:00') =>
      new Date(`2001-03-${String(day).padStart(2, '0')}T${time}Z`);

    it('lists exactly the recordings created in the range, both bounds inclusive, any status', async (t) => {
      const { upstream, addCall, addRecording } = await open(t);
      const call = await addCall();
      const other = await addCall();
      const before = await addRecording(call, 'completed', at(1, '23:59:59'));
      const first = await addRecording(call, 'completed', at(2));
      const middle = await addRecording(other, 'processing', at(3, '12:00:00'));
      const last = await addRecording(other, 'completed', at(4));
      const beyond = await addRecording(call, 'completed', at(4, '00:00:01'));
      const listed = await upstream.listRecordings({ dateCreatedAfter: at(2), dateCreatedBefore: at(4) });
      assert.deepEqual(listed.map((r) => r.sid).sort(), [first, middle, last].sort());
      const byId = new Map(listed.map((r) => [r.sid, r]));
      assert.equal(byId.get(middle)?.status, 'processing');
      assert.equal(byId.get(middle)?.callSid, other);
      assert.equal(byId.get(first)?.callSid, call);
      for (const r of listed) assertRecordingFields(r);
      const open_ = await upstream.listRecordings({ dateCreatedAfter: at(4, '00:00:01') });
      assert.ok(open_.some((r) => r.sid === beyond));
      assert.ok(!open_.some((r) => r.sid === last || r.sid === before));
      const upTo = await upstream.listRecordings({ dateCreatedBefore: at(1, '23:59:59') });
      assert.ok(upTo.some((r) => r.sid === before));
      assert.ok(!upTo.some((r) => r.sid === first));
    });

    it('more recordings in the range than fit one page: every one listed, once', async (t) => {
      const { upstream, addCall, addRecording, pageSize = 1 } = await open(t);
      const call = await addCall();
      const made: RecordingSid[] = [];
      for (let i = 0; i <= pageSize; i++) {
        made.push(await addRecording(call, 'completed', at(20, `10:00:${String(i % 60).padStart(2, '0')}`)));
      }
      const listed = await upstream.listRecordings({ dateCreatedAfter: at(20), dateCreatedBefore: at(21) });
      assert.deepEqual(listed.map((r) => r.sid).sort(), [...made].sort());
    });

    it('an already aborted signal rejects with an AbortError', async (t) => {
      const { upstream } = await open(t);
      await assert.rejects(upstream.listRecordings({ signal: AbortSignal.abort() }), isAbortError);
    });
  });
}

function assertHead(
  res: MediaResponse,
  want: { status: 200 | 206; start: number; length: number; totalSize: number; acceptsRanges: boolean },
): void {
  assert.deepEqual(
    {
      status: res.status,
      start: res.start,
      length: res.contentLength,
      totalSize: res.totalSize,
      acceptsRanges: res.acceptsRanges,
    },
    want,
  );
}

/** What the resolver reads of a recording: a status, and a creation date it can order by (or none). */
function assertRecordingFields(recording: { durationS: number | null; dateCreated: string | null }): void {
  assert.ok(recording.durationS === null || recording.durationS >= 0, `durationS ${recording.durationS}`);
  assert.ok(
    recording.dateCreated === null || !Number.isNaN(Date.parse(recording.dateCreated)),
    `dateCreated ${recording.dateCreated}`,
  );
}

function isAbortError(err: unknown): boolean {
  assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
  assert.equal(err.name, 'AbortError');
  return true;
}
