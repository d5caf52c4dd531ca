/**
 * Injected media faults. Each fault applies to the next `count` GET media requests, for one recording or
 * (without `recording_sid`) for any. A request takes at most one fault: the oldest one aimed at its
 * recording, else the oldest one aimed at any recording. HEAD and metadata requests never take a fault.
 */
import { z } from 'zod';
import { createError } from '../errors.js';

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
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

export const faultSchema = z.strictObject({
  recording_sid: z
    .string()
    .regex(/^RE[0-9a-f]{32}$/, 'must match ^RE[0-9a-f]{32}$')
    .optional(),
  kind: z.enum(FAULT_KINDS),
  /** How many upcoming media requests take this fault. Default 1. */
  count: z.number().int().positive().max(1_000_000).optional(),
  /** `rate_limit` only: the Retry-After value in seconds. Default 1. */
  retry_after: z.number().int().nonnegative().max(86_400).optional(),
  /** `stall` only: how long the connection stays silent before it is reset. Default 600000 (10 min). */
  stall_ms: z.number().int().nonnegative().max(86_400_000).optional(),
  /** Body-fault kinds: bytes sent before the fault strikes (defaults: half the body, 0 for `stall`). */
  after_bytes: z.number().int().nonnegative().optional(),
});

export type FaultInput = z.input<typeof faultSchema>;

export interface Fault {
  kind: FaultKind;
  recordingSid: string | null;
  remaining: number;
  retryAfterS: number;
  stallMs: number;
  afterBytes: number | null;
}

export class FaultQueue {
  private faults: Fault[] = [];

  add(raw: unknown): Fault {
    const parsed = faultSchema.safeParse(raw ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.path.length > 0 ? issue.path.join('.') : 'body';
      throw createError('RECGATE_INVALID_REQUEST', { message: `${field}: ${issue.message}` });
    }
    const input = parsed.data;
    const fault: Fault = {
      kind: input.kind,
      recordingSid: input.recording_sid ?? null,
      remaining: input.count ?? 1,
      retryAfterS: input.retry_after ?? 1,
      stallMs: input.stall_ms ?? 600_000,
      afterBytes: input.after_bytes ?? null,
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
