/**
 * Conditional requests (RFC 9110 §13): entity-tag lists, HTTP dates and the evaluation order of §13.2.2.
 *
 * Choices RFC 9110 leaves open, and the ones taken here:
 * - A date that is not a valid HTTP-date (IMF-fixdate, obsolete RFC 850 or asctime form) makes its header
 *   ignored, as the RFC requires for If-Modified-Since and If-Unmodified-Since.
 * - List members that are not entity-tags (`foo`, `w/"x"`) never match; an If-Match made only of such
 *   members therefore fails with 412, an If-None-Match made only of them lets the request proceed.
 * - Dates compare at one-second resolution, since HTTP dates carry no more.
 * - If-Range with a date uses the range only when the date equals Last-Modified exactly. RFC 9110 §13.1.5
 *   also wants the date to be strong (Last-Modified at least a second before the response's Date); a
 *   recording never changes once stored, so the exact match is taken as enough.
 * - A request `Cache-Control: no-cache` does not bypass 304 (unlike @fastify/send): it is a directive for
 *   caches, and an origin server answers the conditional it was sent.
 */

/** The validators a representation has. */
export interface Validators {
  /** Strong entity tag, quoted. */
  readonly etag: string;
  /** Last modification; compared at one-second resolution. */
  readonly lastModified: Date;
}

/** Request header values by lowercase field name; repeated fields joined with ", ". */
export type HeaderValues = Readonly<Record<string, string | undefined>>;

export type PreconditionOutcome = 'proceed' | 'not-modified' | 'precondition-failed';

export interface EntityTag {
  readonly weak: boolean;
  /** The quoted opaque tag, quotes included. */
  readonly opaque: string;
}

/**
 * Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since in RFC 9110 §13.2.2 order
 * for a representation that exists. If-Range is evaluated separately ({@link ifRangeAllows}), only when a
 * Range header is present and this answered 'proceed'.
 */
export function evaluatePreconditions(
  method: string,
  headers: HeaderValues,
  validators: Validators,
): PreconditionOutcome {
  const getOrHead = method === 'GET' || method === 'HEAD';
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    if (!listMatches(ifMatch, validators.etag, strongCompare)) return 'precondition-failed';
  } else {
    const since = parseHttpDateHeader(headers['if-unmodified-since']);
    const modified = seconds(validators.lastModified);
    if (since !== undefined && modified !== undefined && modified > since) return 'precondition-failed';
  }

  const ifNoneMatch = headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    if (listMatches(ifNoneMatch, validators.etag, weakCompare)) {
      return getOrHead ? 'not-modified' : 'precondition-failed';
    }
  } else if (getOrHead) {
    const since = parseHttpDateHeader(headers['if-modified-since']);
    const modified = seconds(validators.lastModified);
    if (since !== undefined && modified !== undefined && modified <= since) return 'not-modified';
  }
  return 'proceed';
}

/**
 * Whether an If-Range value lets the Range header apply: a strong entity-tag equal to the current one, or
 * an HTTP-date equal to Last-Modified. Anything else (weak tag, other tag, other date, garbage) means the
 * Range header is ignored and the whole representation is sent.
 */
export function ifRangeAllows(ifRange: string, validators: Validators): boolean {
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith('W/')) {
    const tag = parseEntityTag(value);
    const current = parseEntityTag(validators.etag);
    return tag !== undefined && current !== undefined && strongCompare(tag, current);
  }
  const date = parseHttpDate(value);
  const modified = seconds(validators.lastModified);
  return date !== undefined && modified !== undefined && date === modified;
}

/** Strong comparison (RFC 9110 §8.8.3.2): both strong and the same opaque tag. */
export function strongCompare(a: EntityTag, b: EntityTag): boolean {
  return !a.weak && !b.weak && a.opaque === b.opaque;
}

/** Weak comparison: the same opaque tag, weakness ignored. */
export function weakCompare(a: EntityTag, b: EntityTag): boolean {
  return a.opaque === b.opaque;
}

/** Whether `value` is one complete entity-tag (`"…"` or `W/"…"`). */
export function isEntityTag(value: string): boolean {
  return parseEntityTag(value) !== undefined;
}

/**
 * Parses `"*"` or a comma list of entity-tags (RFC 9110 §5.6.1 list rules: empty members and OWS allowed).
 * Members that are not entity-tags are skipped. Tags may contain commas, so the list is scanned, not split.
 */
export function parseEntityTagList(value: string): '*' | EntityTag[] {
  if (value.trim() === '*') return '*';
  const tags: EntityTag[] = [];
  let i = 0;
  const n = value.length;
  while (i < n) {
    const c = value[i];
    if (c === ' ' || c === '\t' || c === ',') {
      i++;
      continue;
    }
    let weak = false;
    let open = i;
    if (value.startsWith('W/"', i)) {
      weak = true;
      open = i + 2;
    }
    if (value[open] === '"') {
      const close = value.indexOf('"', open + 1);
      if (close === -1) break;
      const opaque = value.slice(open, close + 1);
      const next = skipOws(value, close + 1);
      if (ETAG.test(opaque) && (next === n || value[next] === ',')) tags.push({ weak, opaque });
      i = close + 1;
    }
    // Skip the rest of a member that is not a well-formed entity-tag.
    while (i < n && value[i] !== ',') i++;
  }
  return tags;
}

/** RFC 9110 §8.8.3 opaque-tag: DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text. */
const ETAG = /^"[\x21\x23-\x7e\x80-\xff]*"$/;

function parseEntityTag(value: string): EntityTag | undefined {
  const weak = value.startsWith('W/');
  const opaque = weak ? value.slice(2) : value;
  return ETAG.test(opaque) ? { weak, opaque } : undefined;
}

function skipOws(value: string, from: number): number {
  let i = from;
  while (i < value.length && (value[i] === ' ' || value[i] === '\t')) i++;
  return i;
}

function listMatches(
  header: string,
  etag: string,
  compare: (a: EntityTag, b: EntityTag) => boolean,
): boolean {
  const list = parseEntityTagList(header);
  if (list === '*') return true;
  const current = parseEntityTag(etag);
  if (current === undefined) return false;
  return list.some((tag) => compare(tag, current));
}

function seconds(date: Date): number | undefined {
  const ms = date.getTime();
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

function parseHttpDateHeader(value: string | undefined): number | undefined {
  return value === undefined ? undefined : parseHttpDate(value);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const IMF_FIXDATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MONTH}) (\\d{4}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`,
);
const RFC850_DATE = new RegExp(
  `^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MONTH})-(\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`,
);
const ASCTIME_DATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTH}) ([ \\d]\\d) (\\d{2}):(\\d{2}):(\\d{2}) (\\d{4})$`,
);

/**
 * Parses an HTTP-date (RFC 9110 §5.6.7) into seconds since the epoch, or undefined if it is not one.
 * Accepts the three forms recipients must accept; case-sensitive, as the grammar is.
 */
export function parseHttpDate(value: string, now: Date = new Date()): number | undefined {
  const text = value.trim();
  let m = IMF_FIXDATE.exec(text);
  if (m !== null) return toSeconds(+m[3]!, m[2]!, +m[1]!, +m[4]!, +m[5]!, +m[6]!);
  m = RFC850_DATE.exec(text);
  if (m !== null) {
    // A two-digit year more than 50 years ahead means the most recent past year with those digits.
    const yy = +m[3]!;
    const thisYear = now.getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + yy;
    if (year > thisYear + 50) year -= 100;
    return toSeconds(year, m[2]!, +m[1]!, +m[4]!, +m[5]!, +m[6]!);
  }
  m = ASCTIME_DATE.exec(text);
  if (m !== null) return toSeconds(+m[6]!, m[1]!, +m[2]!.trim(), +m[3]!, +m[4]!, +m[5]!);
  return undefined;
}

function toSeconds(
  year: number,
  monthName: string,
  day: number,
  hour: number,
  minute: number,
  second: number,
): number | undefined {
  const month = MONTHS.indexOf(monthName);
  if (day < 1 || hour > 23 || minute > 59 || second > 60) return undefined;
  // setUTCFullYear, unlike Date.UTC, does not read years 0-99 as 1900-1999.
  const date = new Date(0);
  date.setUTCFullYear(year, month, day);
  date.setUTCHours(hour, minute, Math.min(second, 59), 0);
  // Date.UTC rolls 31 Feb over into March; such a date is not a date.
  if (date.getUTCDate() !== day || date.getUTCMonth() !== month) return undefined;
  return Math.floor(date.getTime() / 1000);
}

/** Formats a date as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`). */
export function formatHttpDate(date: Date): string {
  return date.toUTCString();
}
