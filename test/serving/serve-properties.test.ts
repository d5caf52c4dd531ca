/**
 * fast-check properties of the serving core as a whole (issue 11, item 4): Range, If-Range and the
 * conditional headers together, over representations of 0 to 600 bytes, with every body read and checked.
 * range.test.ts and conditional.test.ts hold the properties of the parsers alone.
 *
 * For any request serve() answers one of 200, 206, 304, 412 or 416 (never an exception, which the HTTP layer
 * would turn into a 5xx), and:
 * - Content-Length equals the body's length; a 200 body is the whole representation;
 * - a 206 body is exactly the bytes its Content-Range names; a multipart/byteranges body parses strictly,
 *   its parts ascending and disjoint, each the bytes its Content-Range names;
 * - nothing is amplified: the data bytes of a 206 never exceed the representation, parts never exceed
 *   the ranges cap;
 * - a 416 carries `Content-Range: bytes * /size` and no body; HEAD, 304 and 412 carry no body.
 * Hostile headers (huge numbers, thousands of ranges, whitespace and case games, overlap) get the same
 * guarantees, and the ones RFC 9110 §14.2 calls abusive get a plain 200. The conditional headers' outcome
 * matches a model written from RFC 9110 §13.2.2.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatHttpDate } from '../../src/serving/conditional.js';
import { DEFAULT_MAX_RANGES } from '../../src/serving/range.js';
import { type ServeResult, serve } from '../../src/serving/serve.js';
import { boundaryOf, memorySource, parseMultipart, readAll } from './memory-source.js';

const SEED = 1102;
const ETAG = '"RE1-prop"';
const LAST_MODIFIED = new Date('2024-03-10T12:00:00Z');
const LM = formatHttpDate(LAST_MODIFIED);
const OTHER_DATE = 'Sat, 09 Mar 2024 12:00:00 GMT';
const LATER_DATE = 'Mon, 11 Mar 2024 12:00:00 GMT';

const body = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 3 }),
  fc.uint8Array({ minLength: 1, maxLength: 600, size: 'max' }),
);

const digits = fc.oneof(
  { weight: 8, arbitrary: fc.nat(700).map(String) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 40n }).map(String) },
  { weight: 1, arbitrary: fc.nat(700).map((n) => `000${n}`) },
);
/** Mostly well-formed range-specs (first <= last), with a sprinkle of malformed ones. */
const spec = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.nat(600), fc.nat(40)).map(([a, d]) => `${a}-${a + d}`) },
  { weight: 2, arbitrary: digits.map((a) => `${a}-`) },
  { weight: 2, arbitrary: digits.map((b) => `-${b}`) },
  { weight: 1, arbitrary: fc.tuple(digits, digits).map(([a, b]) => `${a}-${b}`) },
  { weight: 1, arbitrary: fc.constantFrom('', '-', '0x10-20', '1.5-2', '+1-2', '5-3', 'a-b', '-0') },
);
const ows = fc.constantFrom('', '', '', ' ', '\t', ' \t');
const unit = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('bytes', 'BYTES', 'Bytes') },
  { weight: 1, arbitrary: fc.constantFrom('bytes ', ' bytes', 'items', 'byte', '') },
);
const rangeHeader = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .tuple(unit, fc.array(fc.tuple(ows, spec, ows), { minLength: 1, maxLength: 20, size: 'small' }))
      .map(([u, specs]) => `${u}=${specs.map(([a, s, b]) => a + s + b).join(',')}`),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }).map((s) => `bytes=${s}`) },
);
const ifRange = fc.constantFrom(ETAG, `W/${ETAG}`, '"other"', LM, OTHER_DATE, 'garbage', '', ` ${ETAG} `);
const tagList = fc.constantFrom('*', ETAG, `W/${ETAG}`, '"other"', `"other", ${ETAG}`, 'junk', ',,', '');
const date = fc.constantFrom(LM, OTHER_DATE, LATER_DATE, 'not a date', 'Sun, 31 Feb 2024 00:00:00 GMT');

/** Absent most of the time, so that many requests reach the Range logic. */
const rarely = <T>(arbitrary: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary });

/** Request headers, names in any case, each one present or not. */
const headers = fc
  .record({
    range: fc.option(rangeHeader, { freq: 6, nil: undefined }),
    'if-range': rarely(ifRange),
    'if-match': rarely(tagList),
    'if-none-match': rarely(tagList),
    'if-modified-since': rarely(date),
    'if-unmodified-since': rarely(date),
  })
  .chain((all) => {
    const h = Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined);
    return fc.tuple(...h.map(() => fc.constantFrom('lower', 'upper', 'title'))).map((cases) => {
      const out: Record<string, string> = {};
      h.forEach(([name, value], i) => {
        const c = cases[i];
        const key =
          c === 'upper'
            ? name.toUpperCase()
            : c === 'title'
              ? name.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase())
              : name;
        out[key] = value;
      });
      return out;
    });
  });

const method = fc.constantFrom('GET', 'HEAD', 'get', 'head');

/** Checks every guarantee of one answer, reading its body. */
async function check(result: ServeResult, bytes: Buffer, isGet: boolean): Promise<void> {
  const size = bytes.length;
  const h = result.headers;
  assert.ok([200, 206, 304, 412, 416].includes(result.statusCode), `status ${result.statusCode}`);
  if (!isGet || result.statusCode === 304 || result.statusCode === 412 || result.statusCode === 416) {
    assert.equal(result.stream, undefined, 'no body');
  }
  if (result.statusCode === 416) {
    assert.equal(h['Content-Range'], `bytes */${size}`);
    assert.equal(h['Content-Length'], '0');
    return;
  }
  if (result.statusCode === 304) return;
  if (result.statusCode === 412) {
    assert.equal(h['Content-Length'], '0');
    return;
  }
  if (!isGet) {
    assert.equal(result.statusCode, 200, 'HEAD never gets a range');
    assert.equal(h['Content-Length'], String(size));
    return;
  }
  const received = await readAll(result.stream!);
  assert.equal(h['Content-Length'], String(received.length), 'Content-Length matches the body');
  if (result.statusCode === 200) {
    assert.deepEqual(received, bytes);
    return;
  }
  if (h['Content-Range'] !== undefined) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(h['Content-Range']);
    assert.ok(m, h['Content-Range']);
    const [start, end] = [Number(m[1]), Number(m[2])];
    assert.equal(Number(m[3]), size);
    assert.ok(start <= end && end < size);
    assert.deepEqual(received, bytes.subarray(start, end + 1));
    return;
  }
  const parts = parseMultipart(received, boundaryOf(h['Content-Type']));
  assert.ok(parts.length >= 2 && parts.length <= DEFAULT_MAX_RANGES, `${parts.length} parts`);
  let previousEnd = -2;
  let data = 0;
  for (const part of parts) {
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(part.headers['content-range'] ?? '');
    assert.ok(m, part.headers['content-range']);
    const [start, end] = [Number(m[1]), Number(m[2])];
    assert.equal(Number(m[3]), size);
    assert.ok(start > previousEnd + 1 && start <= end && end < size, 'ascending, disjoint, in bounds');
    assert.deepEqual(part.body, bytes.subarray(start, end + 1));
    previousEnd = end;
    data += part.body.length;
  }
  assert.ok(data <= size, `no amplification: ${data} data bytes of ${size}`);
}

function answer(m: string, h: Record<string, string>, bytes: Buffer): ServeResult {
  const source = memorySource(bytes, { etag: ETAG, lastModified: LAST_MODIFIED, chunkSize: 64 });
  return serve({ method: m, headers: h }, source, { contentType: 'audio/mpeg' });
}

describe('serve properties', () => {
  test('any mix of Range, If-Range and conditionals gets a well-formed, exact, bounded answer', async () => {
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(body, method, headers, async (b, m, h) => {
        const bytes = Buffer.from(b);
        const result = answer(m, h, bytes);
        const multipart = result.headers['Content-Type']?.startsWith('multipart/') === true;
        seen.add(`${result.statusCode}${multipart ? ' multipart' : ''}`);
        await check(result, bytes, m.toUpperCase() === 'GET');
      }),
      { seed: SEED, numRuns: 3000 },
    );
    // The generators reach every outcome, so none of the checks above is vacuous.
    assert.deepEqual([...seen].sort(), ['200', '206', '206 multipart', '304', '412', '416']);
  });

  test('a valid range under a matching If-Range is served exactly as the reference model says', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 600, size: 'max' }),
        fc.nat(),
        fc.nat(),
        fc.constantFrom(ETAG, LM, undefined),
        async (b, x, y, validator) => {
          const bytes = Buffer.from(b);
          const [start, end] = [x % bytes.length, y % bytes.length].sort((p, q) => p - q) as [number, number];
          const h: Record<string, string> = { range: `bytes=${start}-${end}` };
          if (validator !== undefined) h['if-range'] = validator;
          const result = answer('GET', h, bytes);
          assert.equal(result.statusCode, 206);
          assert.equal(result.headers['Content-Range'], `bytes ${start}-${end}/${bytes.length}`);
          await check(result, bytes, true);
        },
      ),
      { seed: SEED, numRuns: 1000 },
    );
  });

  test('hostile Range headers never crash, never amplify, and the abusive ones get a plain 200', async () => {
    const many = fc
      .tuple(
        fc.integer({ min: DEFAULT_MAX_RANGES + 1, max: 5000 }),
        fc.constantFrom('0-0', '1-2', '-1', '0-'),
      )
      .map(([n, s]) => `bytes=${Array.from({ length: n }, () => s).join(',')}`);
    const overlapping = fc
      .array(fc.tuple(fc.nat(50), fc.nat(50)), { minLength: 3, maxLength: DEFAULT_MAX_RANGES })
      .map((pairs) => `bytes=${pairs.map(([a, d]) => `${a}-${a + d + 20}`).join(',')}`);
    const huge = fc
      .array(fc.bigInt({ min: 2n ** 53n - 2n, max: 10n ** 400n }), { minLength: 1, maxLength: 6 })
      .map((ns) => `bytes=${ns.map((n, i) => (i % 2 === 0 ? `${n}-` : `0-${n}`)).join(',')}`);
    const games = fc
      .tuple(fc.constantFrom('bytes', 'BYTES', 'bYtEs'), fc.constantFrom(' ', '\t', ''), fc.nat(2000))
      .map(([u, w, n]) => `${w}${u}=${w}${'0-1,'.repeat(n % 20)}${w}${',,'.repeat(n)}-5${w}`);
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 100, maxLength: 600, size: 'max' }),
        fc.oneof(many, overlapping, huge, games),
        async (b, range) => {
          const bytes = Buffer.from(b);
          const result = answer('GET', { range }, bytes);
          await check(result, bytes, true);
          const specs = range
            .slice(range.indexOf('=') + 1)
            .split(',')
            .filter((s) => s.trim() !== '').length;
          if (specs > DEFAULT_MAX_RANGES) assert.equal(result.statusCode, 200, 'too many ranges: ignored');
        },
      ),
      { seed: SEED, numRuns: 400 },
    );
  });

  test('conditionals are decided as RFC 9110 §13.2.2 says, by a model written from its text', () => {
    const member = fc.constantFrom(ETAG, `W/${ETAG}`, '"other"', 'W/"other"', 'junk');
    const list = fc.oneof(
      fc.constant('*'),
      fc.array(member, { minLength: 1, maxLength: 3 }).map((tags) => tags.join(', ')),
    );
    const when = fc.constantFrom(LM, OTHER_DATE, LATER_DATE, 'not a date');
    const conditionals = fc.record(
      {
        'if-match': list,
        'if-none-match': list,
        'if-modified-since': when,
        'if-unmodified-since': when,
      },
      { requiredKeys: [] },
    );
    const strongMatch = (v: string) => v === '*' || v.split(', ').includes(ETAG);
    const weakMatch = (v: string) => v === '*' || v.split(', ').some((t) => t === ETAG || t === `W/${ETAG}`);
    /** Seconds since the epoch for a valid date, compared with Last-Modified; undefined for garbage. */
    const order = (v: string) => (v === LM ? 0 : v === OTHER_DATE ? -1 : v === LATER_DATE ? 1 : undefined);
    fc.assert(
      fc.property(fc.constantFrom('GET', 'HEAD'), conditionals, (m, h) => {
        let expected = 200;
        const ius = h['if-unmodified-since'] === undefined ? undefined : order(h['if-unmodified-since']);
        const ims = h['if-modified-since'] === undefined ? undefined : order(h['if-modified-since']);
        if (h['if-match'] !== undefined) {
          if (!strongMatch(h['if-match'])) expected = 412;
        } else if (ius !== undefined && ius < 0) expected = 412;
        if (expected === 200) {
          if (h['if-none-match'] !== undefined) {
            if (weakMatch(h['if-none-match'])) expected = 304;
          } else if (ims !== undefined && ims >= 0) expected = 304;
        }
        const headers = Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) as Record<
          string,
          string
        >;
        assert.equal(answer(m, headers, Buffer.from('0123456789')).statusCode, expected);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });

  test('If-None-Match with the current tag and If-Match with another never send a body', () => {
    fc.assert(
      fc.property(body, method, rangeHeader, (b, m, range) => {
        const bytes = Buffer.from(b);
        const notModified = answer(m, { 'if-none-match': `"x", ${ETAG}`, range }, bytes);
        assert.equal(notModified.statusCode, 304);
        assert.equal(notModified.stream, undefined);
        const failed = answer(m, { 'if-match': '"x"', range }, bytes);
        assert.equal(failed.statusCode, 412);
        assert.equal(failed.stream, undefined);
      }),
      { seed: SEED, numRuns: 500 },
    );
  });
});
