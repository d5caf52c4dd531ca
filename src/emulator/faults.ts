/**
 * Injected media faults. Each fault applies to the next `count` GET media requests, for one recording or
 * (without `recording_sid`) for any. A request takes at most one fault: the oldest one aimed at its
 * recording, else the oldest one aimed at any recording. HEAD and metadata requests never take a fault.
 *
 * `http_500`, `rate_limit`, `html_page` and `empty_body` answer for an upstream that is broken as a whole:
 * they apply whether or not the recording exists or is ready.
 */
import { z } from 'zod';
import { isRecordingSid, RECORDING_SID_PATTERN } from '../sid.js';
import { invalidInput } from './invalid.js';

export const FAULT_KINDS = [
  /** 500 with Twilio's error JSON (code 20500). */
  'http_500',
  /** 429 (code 20429) with `Retry-After: retry_after` (seconds, default 1). */
  'rate_limit',
  /** 404 (code 20404), as Twilio answers while a recording is still processing. */
  'not_ready',
  /** Headers, then the first `after_bytes` (default half) of the body, then a TCP reset. */
  'reset_mid_body',
  /** Headers with the full Content-Length, then `after_bytes` (default half) bytes, then a clean close (FIN). */
  'short_body',
  /** Headers and `after_bytes` (default 0) bytes, then silence for `stall_ms` (default 10 min), then a reset. */
  'stall',
  /**
   * 200 with {@link HTML_FAULT_PAGE} (a small Twilio-like error page) instead of the media, typed
   * `text/html; charset=utf-8` unless `content_type` says otherwise (`audio/mpeg` to lie about it).
   */
  'html_page',
  /** 200 with `Content-Length: 0` and no body, typed as the media would be unless `content_type` says otherwise. */
  'empty_body',
  /**
   * The media (200 or 206 as asked) with one byte inverted: byte `at` of the whole media (negative counts from
   * its end: -1 is the last byte, an encrypted recording's GCM tag; default the middle). A range that does
   * not hold the byte is sent unchanged.
   */
  'flip_byte',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

/** Kinds that answer 200 with a body other than the media: `content_type` applies to them. */
const TYPED_KINDS: ReadonlySet<FaultKind> = new Set(['html_page', 'empty_body']);
/** Kinds that answer 200 with a body: `omit_content_length` applies to them. */
const BODY_KINDS: ReadonlySet<FaultKind> = new Set([
  'reset_mid_body',
  'short_body',
  'stall',
  'html_page',
  'empty_body',
]);

/** The body of an `html_page` fault: what a CDN or load balancer in front of Twilio serves when it fails. */
export const HTML_FAULT_PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Twilio - Service Temporarily Unavailable</title>
<style>
body { margin: 0; font-family: "Inter", Helvetica, Arial, sans-serif; color: #121c2d; background: #f4f4f6; }
main { max-width: 36rem; margin: 4rem auto; padding: 2rem; background: #fff; border-radius: 8px; }
h1 { font-size: 1.5rem; color: #f22f46; }
</style>
</head>
<body>
<main>
<h1>We're sorry, something went wrong.</h1>
<p>The service is temporarily unavailable. Please try your request again in a few minutes.</p>
<p>If the problem persists, contact Twilio Support and quote the error reference below.</p>
<p><small>Error 503 &middot; Reference RQ5c3f2a1b0e9d8c7b6a5f4e3d2c1b0a9f</small></p>
</main>
</body>
</html>
`;

/**
 * Body of `POST /__emulator/faults` and argument of `Emulator.addFault`. Unknown fields are refused, and so
 * are `content_type` and `omit_content_length` with kinds they do not apply to.
 */
export const faultSchema = z
  .strictObject({
    recording_sid: z.string().refine(isRecordingSid, `must match ^${RECORDING_SID_PATTERN}$`).optional(),
    kind: z.enum(FAULT_KINDS),
    /** How many upcoming media requests take this fault. Default 1. */
    count: z.number().int().positive().max(1_000_000).optional(),
    /** `rate_limit` only: the Retry-After value in seconds. Default 1. */
    retry_after: z.number().int().nonnegative().max(86_400).optional(),
    /** `stall` only: how long the connection stays silent before it is reset. Default 600000 (10 min). */
    stall_ms: z.number().int().nonnegative().max(86_400_000).optional(),
    /** Body-fault kinds: bytes sent before the fault strikes (defaults: half the body, 0 for `stall`). */
    after_bytes: z.number().int().nonnegative().optional(),
    /**
     * `html_page` and `empty_body` only: the Content-Type header to send, any printable ASCII. Defaults:
     * `text/html; charset=utf-8` for `html_page`, the media's own type (`audio/mpeg`, `audio/x-wav`) for
     * `empty_body`.
     */
    content_type: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[\x20-\x7e]+$/, 'must be printable ASCII')
      .optional(),
    /**
     * Kinds that send a 200 body (`reset_mid_body`, `short_body`, `stall`, `html_page`, `empty_body`): send no
     * Content-Length and delimit the body by closing the connection, as an HTTP/1.0-style upstream does. A
     * `short_body` then ends in a clean close the client cannot tell from a whole body (issue 9 item 4);
     * with `after_bytes` at or above the size it sends the whole media that way. Default false.
     */
    omit_content_length: z.boolean().optional(),
    /** `flip_byte` only: which byte of the media to invert; negative counts from the end. Default the middle. */
    at: z.number().int().min(-2_000_000_000).max(2_000_000_000).optional(),
  })
  .refine((v) => v.content_type === undefined || TYPED_KINDS.has(v.kind), {
    message: 'applies only to kinds html_page and empty_body',
    path: ['content_type'],
  })
  .refine((v) => v.at === undefined || v.kind === 'flip_byte', {
    message: 'applies only to kind flip_byte',
    path: ['at'],
  })
  .refine((v) => v.omit_content_length === undefined || BODY_KINDS.has(v.kind), {
    message: 'applies only to kinds reset_mid_body, short_body, stall, html_page and empty_body',
    path: ['omit_content_length'],
  });

export type FaultInput = z.input<typeof faultSchema>;

export interface Fault {
  kind: FaultKind;
  recordingSid: string | null;
  remaining: number;
  retryAfterS: number;
  stallMs: number;
  afterBytes: number | null;
  /** Content-Type override (`html_page`, `empty_body`); `null` for the kind's default. */
  contentType: string | null;
  omitContentLength: boolean;
  /** `flip_byte`: the byte to invert (negative from the end); `null` for the middle. */
  at: number | null;
}

export class FaultQueue {
  private faults: Fault[] = [];

  add(raw: unknown): Fault {
    const parsed = faultSchema.safeParse(raw ?? {});
    if (!parsed.success) invalidInput(parsed.error.issues[0]!);
    const input = parsed.data;
    const fault: Fault = {
      kind: input.kind,
      recordingSid: input.recording_sid ?? null,
      remaining: input.count ?? 1,
      retryAfterS: input.retry_after ?? 1,
      stallMs: input.stall_ms ?? 600_000,
      afterBytes: input.after_bytes ?? null,
      contentType: input.content_type ?? null,
      omitContentLength: input.omit_content_length ?? false,
      at: input.at ?? null,
    };
    this.faults.push(fault);
    return fault;
  }

  /** Consumes one use of the fault that applies to this media request, if any. */
  take(recordingSid: string): Fault | undefined {
    const fault =
      this.faults.find((f) => f.recordingSid === recordingSid) ??
      this.faults.find((f) => f.recordingSid === null);
    if (!fault) return undefined;
    fault.remaining--;
    if (fault.remaining <= 0) this.faults = this.faults.filter((f) => f !== fault);
    return fault;
  }

  pending(): Array<{ kind: FaultKind; recording_sid: string | null; remaining: number }> {
    return this.faults.map((f) => ({ kind: f.kind, recording_sid: f.recordingSid, remaining: f.remaining }));
  }

  clear(): void {
    this.faults = [];
  }
}
