/**
 * The `Range` request header (RFC 9110 §14.1–14.2), parsed and resolved against a representation's size.
 *
 * Grammar, exactly as RFC 9110 writes it:
 *
 *     Range            = ranges-specifier
 *     ranges-specifier = range-unit "=" range-set
 *     range-set        = 1#range-spec          ; OWS around commas, empty elements allowed
 *     range-spec       = int-range / suffix-range / other-range
 *     int-range        = first-pos "-" [ last-pos ]
 *     suffix-range     = "-" suffix-length
 *
 * Policies (each a choice RFC 9110 leaves to the server):
 * - The unit is compared case-insensitively. Any unit but `bytes` is ignored (`reason: 'unit'`).
 * - Anything that does not match the grammar is ignored, not answered with an error (`'malformed'`):
 *   RFC 9110 §14.2 lets a server ignore a Range header, and a full 200 is what every client copes with.
 *   That covers whitespace around `=` (the grammar has none there), signs, hex, fractions, `other-range`
 *   forms under `bytes`, and an int-range whose last-pos is below its first-pos (RFC 9110 §14.1.1 calls
 *   that invalid, which invalidates the whole header).
 * - Positions are decimal digits only and may be arbitrarily long: a first-pos beyond the size makes that
 *   range unsatisfiable, a last-pos beyond the size is clamped to size - 1, a suffix longer than the size
 *   selects the whole representation, and `-0` is unsatisfiable.
 * - Unsatisfiable ranges are dropped; if none is left the answer is 416 (`kind: 'unsatisfiable'`).
 * - Abuse caps (RFC 9110 §14.2 names these patterns as signs of a broken client or an attack); each
 *   ignores the header so the client gets the plain 200 it would get from a server without Range support:
 *   more than `maxRanges` range-specs (`'too-many-ranges'`), satisfiable ranges whose lengths add up to
 *   more than the representation (`'wasteful'`, as Go's net/http does), more than two ranges that overlap
 *   another (`'overlapping'`), or ranges that step backwards more than once (`'unordered'`).
 * - The surviving ranges are sorted and overlapping or adjacent ones are coalesced (RFC 9110 §14.2 allows
 *   this), so a `kind: 'ranges'` result is ascending and disjoint. One range is served as a plain 206; more
 *   than one as `multipart/byteranges` (see serve.ts), never as a single covering range, which could send
 *   far more than was asked for (`bytes=0-0,-1` on a large file).
 */
import { createError } from '../errors.js';

/** An inclusive byte range within a representation: `0 <= start <= end < size`. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Why a Range header was ignored; the response is then a full 200. */
export type RangeIgnoreReason =
  | 'malformed'
  | 'unit'
  | 'too-many-ranges'
  | 'wasteful'
  | 'overlapping'
  | 'unordered';

export type RangeResult =
  /** No Range header. */
  | { readonly kind: 'none' }
  /** Serve these ranges with 206: ascending, disjoint, non-adjacent, at least one. */
  | { readonly kind: 'ranges'; readonly ranges: readonly ByteRange[] }
  /** Valid syntax but nothing satisfiable: answer 416 with `Content-Range: bytes * /size`. */
  | { readonly kind: 'unsatisfiable' }
  /** Ignore the header and serve the whole representation with 200. */
  | { readonly kind: 'ignored'; readonly reason: RangeIgnoreReason };

export interface ParseRangeOptions {
  /**
   * Most range-specs a header may list before it is ignored as abusive.
   * @default 16
   */
  maxRanges?: number | undefined;
}

export const DEFAULT_MAX_RANGES = 16;

const NONE: RangeResult = { kind: 'none' };
const UNSATISFIABLE: RangeResult = { kind: 'unsatisfiable' };
const ignored = (reason: RangeIgnoreReason): RangeResult => ({ kind: 'ignored', reason });

/** RFC 9110 §5.6.2 tchar. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const SPEC = /^(\d*)-(\d*)$/;

/** Parses `header` (undefined when absent) and resolves it against a representation of `size` bytes. */
export function parseRange(
  header: string | undefined,
  size: number,
  options: ParseRangeOptions = {},
): RangeResult {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw createError('RECGATE_INTERNAL', { message: 'size must be a non-negative safe integer' });
  }
  const maxRanges = validateMaxRanges(options.maxRanges);
  if (header === undefined) return NONE;

  const value = trimOws(header);
  const eq = value.indexOf('=');
  if (eq <= 0) return ignored('malformed');
  const unit = value.slice(0, eq);
  if (!TOKEN.test(unit)) return ignored('malformed');
  if (unit.toLowerCase() !== 'bytes') return ignored('unit');

  const set = value.slice(eq + 1);
  if (set.length === 0 || set[0] === ' ' || set[0] === '\t') return ignored('malformed');

  const satisfiable: ByteRange[] = [];
  let specs = 0;
  let from = 0;
  while (from <= set.length) {
    let comma = set.indexOf(',', from);
    if (comma === -1) comma = set.length;
    const element = trimOws(set.slice(from, comma));
    from = comma + 1;
    if (element.length === 0) continue;
    // Stopping here keeps a megabyte of "0-0,0-0,…" as cheap as a short header.
    if (++specs > maxRanges) return ignored('too-many-ranges');
    const match = SPEC.exec(element);
    if (match === null) return ignored('malformed');
    const first = match[1]!;
    const last = match[2]!;
    if (first === '') {
      if (last === '') return ignored('malformed');
      const suffix = toNumber(last);
      if (suffix > 0 && size > 0) satisfiable.push({ start: Math.max(0, size - suffix), end: size - 1 });
      continue;
    }
    if (last !== '' && compareDigits(first, last) > 0) return ignored('malformed');
    const start = toNumber(first);
    if (start >= size) continue;
    const end = last === '' ? size - 1 : Math.min(toNumber(last), size - 1);
    satisfiable.push({ start, end });
  }
  if (specs === 0) return ignored('malformed');
  if (satisfiable.length === 0) return UNSATISFIABLE;
  if (satisfiable.length === 1) return { kind: 'ranges', ranges: satisfiable };

  const abuse = abuseReason(satisfiable, size);
  if (abuse !== undefined) return ignored(abuse);
  return { kind: 'ranges', ranges: coalesce(satisfiable) };
}

/** `Content-Range` of a 206 (or of one part of a multipart/byteranges body). */
export function contentRange(start: number, end: number, size: number): string {
  return `bytes ${start}-${end}/${size}`;
}

/** `Content-Range` of a 416. */
export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`;
}

function validateMaxRanges(maxRanges: number | undefined): number {
  if (maxRanges === undefined) return DEFAULT_MAX_RANGES;
  if (!Number.isSafeInteger(maxRanges) || maxRanges < 1) {
    throw createError('RECGATE_INTERNAL', { message: 'options.maxRanges must be a positive integer' });
  }
  return maxRanges;
}

function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && (value[start] === ' ' || value[start] === '\t')) start++;
  while (end > start && (value[end - 1] === ' ' || value[end - 1] === '\t')) end--;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

function stripLeadingZeros(digits: string): string {
  let i = 0;
  while (i < digits.length - 1 && digits[i] === '0') i++;
  return digits.slice(i);
}

/** A digit string as a number; anything beyond the safe-integer range is Infinity (beyond every size). */
function toNumber(digits: string): number {
  const stripped = stripLeadingZeros(digits);
  if (stripped.length > 16) return Number.POSITIVE_INFINITY;
  const n = Number(stripped);
  return Number.isSafeInteger(n) ? n : Number.POSITIVE_INFINITY;
}

/** Compares two digit strings numerically, however long. */
function compareDigits(a: string, b: string): number {
  const x = stripLeadingZeros(a);
  const y = stripLeadingZeros(b);
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

function abuseReason(ranges: readonly ByteRange[], size: number): RangeIgnoreReason | undefined {
  let total = 0;
  let descents = 0;
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    total += r.end - r.start + 1;
    if (i > 0 && r.start < ranges[i - 1]!.start) descents++;
  }
  if (total > size) return 'wasteful';

  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let overlapping = 0;
  let groupSize = 1;
  let groupEnd = sorted[0]!.end;
  for (let i = 1; i < sorted.length; i++) {
    const r = sorted[i]!;
    if (r.start <= groupEnd) {
      groupSize++;
      groupEnd = Math.max(groupEnd, r.end);
    } else {
      if (groupSize > 1) overlapping += groupSize;
      groupSize = 1;
      groupEnd = r.end;
    }
  }
  if (groupSize > 1) overlapping += groupSize;
  if (overlapping > 2) return 'overlapping';
  if (descents > 1) return 'unordered';
  return undefined;
}

function coalesce(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: ByteRange[] = [];
  let current = sorted[0]!;
  for (let i = 1; i < sorted.length; i++) {
    const r = sorted[i]!;
    if (r.start <= current.end + 1) {
      if (r.end > current.end) current = { start: current.start, end: r.end };
    } else {
      out.push(current);
      current = r;
    }
  }
  out.push(current);
  return out;
}
