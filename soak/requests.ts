/**
 * The soak's request kinds: what each one asks recgate for, and what the answer must be. Pure: planning
 * turns a kind, a recording and a random source into a request with its expectation; checking says what,
 * if anything, is wrong with the status, headers and body that came back.
 */
import { createHash, type Hash } from 'node:crypto';
import { between } from '../test/faults/seed.js';

/** Every kind of request the soak makes, in the order its table lists them. */
export const KINDS = [
  'hit',
  'miss',
  'range window',
  'range suffix',
  'range open-ended',
  'head',
  'if-none-match',
  'no token',
  'bad token',
  'other business',
  'disconnect',
] as const;

export type Kind = (typeof KINDS)[number];

/**
 * How often each kind is picked, relative to the others. `miss` is picked only while a fresh recording is
 * waiting (the soak creates one about every half second), so its share follows that pace, not this weight.
 */
export const MIX: Readonly<Record<Kind, number>> = {
  hit: 16,
  miss: 10,
  'range window': 20,
  'range suffix': 6,
  'range open-ended': 8,
  head: 8,
  'if-none-match': 10,
  'no token': 3,
  'bad token': 4,
  'other business': 4,
  disconnect: 8,
};

/** A recording registered to the soak's business, with its bytes to check responses against. */
export interface SoakRecording {
  callSid: string;
  recordingSid: string;
  size: number;
  /** sha256 (hex) of the whole recording, as the emulator reported it. */
  sha256: string;
  content: Buffer;
}

/** recgate's ETag for a recording (README: `"RE…-SIZE"`). */
export function entityTag(recording: Pick<SoakRecording, 'recordingSid' | 'size'>): string {
  return `"${recording.recordingSid}-${recording.size}"`;
}

/** `Authorization` header values. */
export interface Credentials {
  /** A valid token of the business every soak call is registered to. */
  owner: string;
  /** A valid token of another business. */
  otherBusiness: string;
  /** Values recgate must refuse with 401: another secret's token, an expired one, a tampered one, … */
  bad: readonly string[];
}

/** The body a response must carry. */
export type ExpectedBody =
  /** The recording's bytes `start` to `end` inclusive: the whole recording is checked by sha256. */
  | { type: 'bytes'; start: number; end: number }
  /** No body at all (HEAD, 304). */
  | { type: 'none' }
  /** A JSON error `{"error": {"code"}}`. */
  | { type: 'error'; code: string };

export interface PlannedRequest {
  kind: Kind;
  method: 'GET' | 'HEAD';
  path: string;
  headers: Record<string, string>;
  recording: SoakRecording;
  status: number;
  /** Response headers (lower-case names) that must have exactly these values. */
  expectHeaders: Record<string, string>;
  body: ExpectedBody;
  /** Go away once this many body bytes have arrived (1 to the body's length − 1). */
  disconnectAfter?: number;
}

/** Longest range window and suffix a plan asks for: a player's read-ahead, not a download. */
export const MAX_RANGE_BYTES = 512 * 1024;

/** An integer from min to max, inclusive, spread evenly over orders of magnitude. */
export function logUniform(random: () => number, min: number, max: number): number {
  const value = Math.round(Math.exp(Math.log(min) + random() * (Math.log(max) - Math.log(min))));
  return Math.min(max, Math.max(min, value));
}

/** Picks a kind by {@link MIX}, leaving out `miss` while no fresh recording waits and `hit` while none is cached. */
export function pickKind(random: () => number, available: { fresh: boolean; cached: boolean }): Kind {
  const kinds = KINDS.filter((k) => (k !== 'miss' || available.fresh) && (k !== 'hit' || available.cached));
  const total = kinds.reduce((sum, k) => sum + MIX[k], 0);
  let point = random() * total;
  for (const kind of kinds) {
    point -= MIX[kind];
    if (point < 0) return kind;
  }
  return kinds[kinds.length - 1]!;
}

function whole(recording: SoakRecording): Pick<PlannedRequest, 'status' | 'expectHeaders' | 'body'> {
  return {
    status: 200,
    expectHeaders: {
      'content-length': String(recording.size),
      'content-type': 'audio/mpeg',
      etag: entityTag(recording),
    },
    body: { type: 'bytes', start: 0, end: recording.size - 1 },
  };
}

function partial(
  recording: SoakRecording,
  start: number,
  end: number,
): Pick<PlannedRequest, 'status' | 'expectHeaders' | 'body'> {
  return {
    status: 206,
    expectHeaders: {
      'content-length': String(end - start + 1),
      'content-range': `bytes ${start}-${end}/${recording.size}`,
      etag: entityTag(recording),
    },
    body: { type: 'bytes', start, end },
  };
}

/** The request of `kind` on `recording`, every choice drawn from `random`. */
export function planRequest(
  kind: Kind,
  recording: SoakRecording,
  random: () => number,
  credentials: Credentials,
): PlannedRequest {
  const { size } = recording;
  const base = {
    kind,
    method: 'GET' as 'GET' | 'HEAD',
    path: `/api/calls/${recording.callSid}/download`,
    headers: { authorization: credentials.owner } as Record<string, string>,
    recording,
  };
  switch (kind) {
    case 'hit':
    case 'miss':
      return { ...base, ...whole(recording) };
    case 'range window': {
      const start = between(random, 0, size - 1);
      const end = Math.min(size - 1, start + logUniform(random, 1, MAX_RANGE_BYTES) - 1);
      base.headers.range = `bytes=${start}-${end}`;
      return { ...base, ...partial(recording, start, end) };
    }
    case 'range suffix': {
      const length = logUniform(random, 1, Math.min(size, MAX_RANGE_BYTES));
      base.headers.range = `bytes=-${length}`;
      return { ...base, ...partial(recording, size - length, size - 1) };
    }
    case 'range open-ended': {
      const start = between(random, 0, size - 1);
      base.headers.range = `bytes=${start}-`;
      return { ...base, ...partial(recording, start, size - 1) };
    }
    case 'head':
      return {
        ...base,
        method: 'HEAD',
        status: 200,
        expectHeaders: {
          'content-length': String(size),
          'accept-ranges': 'bytes',
          etag: entityTag(recording),
        },
        body: { type: 'none' },
      };
    case 'if-none-match': {
      const tag = entityTag(recording);
      // Weak comparison (RFC 9110 §13.1.2): a weak tag, a list and `*` all match.
      const forms = [tag, `W/${tag}`, `"RE${'0'.repeat(32)}-1", ${tag}`, '*'];
      base.headers['if-none-match'] = forms[between(random, 0, forms.length - 1)]!;
      return { ...base, status: 304, expectHeaders: { etag: tag }, body: { type: 'none' } };
    }
    case 'no token':
      delete base.headers.authorization;
      return { ...base, ...unauthenticated() };
    case 'bad token':
      base.headers.authorization = credentials.bad[between(random, 0, credentials.bad.length - 1)]!;
      return { ...base, ...unauthenticated() };
    case 'other business':
      base.headers.authorization = credentials.otherBusiness;
      return { ...base, status: 404, expectHeaders: {}, body: { type: 'error', code: 'RECGATE_NOT_FOUND' } };
    case 'disconnect': {
      // A listener who closes the tab: mid-way through the whole file, or through the rest after a seek.
      const start = random() < 0.5 ? 0 : between(random, 0, Math.floor(size / 2));
      if (start > 0) base.headers.range = `bytes=${start}-`;
      const planned = start > 0 ? partial(recording, start, size - 1) : whole(recording);
      return { ...base, ...planned, disconnectAfter: between(random, 1, Math.max(1, size - start - 1)) };
    }
  }
}

function unauthenticated(): Pick<PlannedRequest, 'status' | 'expectHeaders' | 'body'> {
  return { status: 401, expectHeaders: {}, body: { type: 'error', code: 'RECGATE_UNAUTHENTICATED' } };
}

/** One line naming the request, for failure reports. */
export function describeRequest(plan: PlannedRequest): string {
  const shown = ['range', 'if-none-match'].flatMap((h) =>
    plan.headers[h] === undefined ? [] : [`${h}: ${plan.headers[h]}`],
  );
  if (plan.disconnectAfter !== undefined) shown.push(`going away after ${plan.disconnectAfter} bytes`);
  const auth =
    plan.kind === 'bad token' ? [`authorization: ${plan.headers.authorization?.slice(0, 24)}…`] : [];
  return `${plan.kind}: ${plan.method} ${plan.path} (${[...shown, ...auth, `${plan.recording.recordingSid}, ${plan.recording.size} bytes`].join('; ')})`;
}

/** What is wrong with a response's status and headers, or undefined. */
export function checkHead(
  plan: PlannedRequest,
  status: number,
  headers: Record<string, string | string[] | undefined>,
): string | undefined {
  if (status !== plan.status) return `status ${status}, expected ${plan.status}`;
  for (const [name, want] of Object.entries(plan.expectHeaders)) {
    const got = headers[name];
    const value = Array.isArray(got) ? got.join(', ') : got;
    if (value !== want)
      return `${name}: ${value === undefined ? 'absent' : JSON.stringify(value)}, expected ${JSON.stringify(want)}`;
  }
  return undefined;
}

/**
 * Checks a response body as it streams: the whole recording by sha256, a range or a cut body byte for byte
 * as it arrives, an error by its JSON code, and no body as no bytes.
 */
export class BodyCheck {
  readonly #plan: PlannedRequest;
  readonly #hash: Hash | undefined;
  #received = 0;
  #mismatchAt: number | undefined;
  #errorText = '';

  constructor(plan: PlannedRequest) {
    this.#plan = plan;
    const { body } = plan;
    this.#hash =
      body.type === 'bytes' &&
      body.start === 0 &&
      body.end === plan.recording.size - 1 &&
      !plan.disconnectAfter
        ? createHash('sha256')
        : undefined;
  }

  get received(): number {
    return this.#received;
  }

  update(chunk: Buffer): void {
    const { body } = this.#plan;
    if (body.type === 'bytes') {
      if (this.#hash) this.#hash.update(chunk);
      else if (this.#mismatchAt === undefined) {
        const from = body.start + this.#received;
        const want = this.#plan.recording.content.subarray(from, Math.min(from + chunk.length, body.end + 1));
        if (!chunk.subarray(0, want.length).equals(want) || want.length < chunk.length) {
          let i = 0;
          while (i < want.length && chunk[i] === want[i]) i++;
          this.#mismatchAt = this.#received + i;
        }
      }
    } else if (body.type === 'error' && this.#errorText.length < 4096) {
      this.#errorText += chunk.toString('utf8');
    }
    this.#received += chunk.length;
  }

  /** What is wrong with a body that ended normally, or undefined. */
  complete(): string | undefined {
    const { body } = this.#plan;
    if (body.type === 'none')
      return this.#received === 0 ? undefined : `${this.#received} body bytes, expected none`;
    if (body.type === 'error') {
      let code: unknown;
      try {
        code = (JSON.parse(this.#errorText) as { error?: { code?: unknown } }).error?.code;
      } catch {
        return `body is not a JSON error: ${JSON.stringify(this.#errorText.slice(0, 200))}`;
      }
      return code === body.code ? undefined : `error code ${JSON.stringify(code)}, expected ${body.code}`;
    }
    const length = body.end - body.start + 1;
    if (this.#received !== length) return `${this.#received} body bytes, expected ${length}`;
    if (this.#hash) {
      const digest = this.#hash.digest('hex');
      return digest === this.#plan.recording.sha256
        ? undefined
        : `body sha256 ${digest.slice(0, 16)}… differs from the recording's ${this.#plan.recording.sha256.slice(0, 16)}…`;
    }
    return this.#mismatchAt === undefined ? undefined : this.#differs();
  }

  /** What is wrong with a body the client cut off on purpose (the bytes so far must be right), or undefined. */
  cut(): string | undefined {
    if (this.#received === 0) return 'no body byte arrived before going away';
    return this.#mismatchAt === undefined ? undefined : this.#differs();
  }

  #differs(): string {
    const { body } = this.#plan;
    const offset = body.type === 'bytes' ? body.start + this.#mismatchAt! : this.#mismatchAt!;
    return `body bytes differ from the recording from byte ${offset} on`;
  }
}
