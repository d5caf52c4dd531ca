import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isRecgateError } from '../../src/errors.js';
import {
  contentRange,
  DEFAULT_MAX_RANGES,
  parseRange,
  type RangeResult,
  unsatisfiedRange,
} from '../../src/serving/range.js';

const ranges = (...pairs: [number, number][]): RangeResult => ({
  kind: 'ranges',
  ranges: pairs.map(([start, end]) => ({ start, end })),
});
const ignored = (reason: string): RangeResult => ({ kind: 'ignored', reason }) as RangeResult;
const UNSAT: RangeResult = { kind: 'unsatisfiable' };

const HUGE = '9'.repeat(400);

describe('parseRange table', () => {
  const cases: [string | undefined, number, RangeResult][] = [
    [undefined, 100, { kind: 'none' }],
    // basic forms
    ['bytes=0-0', 100, ranges([0, 0])],
    ['bytes=0-49', 100, ranges([0, 49])],
    ['bytes=50-', 100, ranges([50, 99])],
    ['bytes=-10', 100, ranges([90, 99])],
    ['bytes=99-99', 100, ranges([99, 99])],
    // unit is case-insensitive
    ['BYTES=0-1', 100, ranges([0, 1])],
    ['Bytes=0-1', 100, ranges([0, 1])],
    // clamping and suffixes
    ['bytes=90-200', 100, ranges([90, 99])],
    ['bytes=-100', 100, ranges([0, 99])],
    ['bytes=-1000', 100, ranges([0, 99])],
    [`bytes=0-${HUGE}`, 100, ranges([0, 99])],
    [`bytes=-${HUGE}`, 100, ranges([0, 99])],
    ['bytes=0-9007199254740993', 100, ranges([0, 99])],
    ['bytes=0000000000000000000000005-0000000000000000000000007', 100, ranges([5, 7])],
    // unsatisfiable
    ['bytes=100-', 100, UNSAT],
    ['bytes=100-200', 100, UNSAT],
    [`bytes=${HUGE}-`, 100, UNSAT],
    ['bytes=-0', 100, UNSAT],
    ['bytes=-0,100-', 100, UNSAT],
    ['bytes=0-', 0, UNSAT],
    ['bytes=-5', 0, UNSAT],
    // unsatisfiable members are dropped when another is satisfiable (Apache byterange7.t)
    ['bytes=200-300,10-20', 100, ranges([10, 20])],
    // OWS and empty list elements around commas
    ['bytes=0-1, 5-6', 100, ranges([0, 1], [5, 6])],
    ['bytes=0-1 ,\t5-6', 100, ranges([0, 1], [5, 6])],
    ['bytes=,0-1,,5-6,', 100, ranges([0, 1], [5, 6])],
    ['  bytes=0-1  ', 100, ranges([0, 1])],
    // coalescing: adjacent and overlapping, sorted ascending
    ['bytes=0-1,2-3', 100, ranges([0, 3])],
    ['bytes=0-5,3-8', 100, ranges([0, 8])],
    ['bytes=50-59,0-9', 100, ranges([0, 9], [50, 59])],
    ['bytes=0-9,-10,10-19', 1000, ranges([0, 19], [990, 999])],
    // unknown units
    ['items=0-4', 100, ignored('unit')],
    ['none=0-4', 100, ignored('unit')],
    // malformed
    ['', 100, ignored('malformed')],
    ['asdf', 100, ignored('malformed')],
    ['bytes', 100, ignored('malformed')],
    ['bytes=', 100, ignored('malformed')],
    ['bytes=,', 100, ignored('malformed')],
    ['=0-1', 100, ignored('malformed')],
    ['bytes =0-1', 100, ignored('malformed')],
    ['bytes= 0-1', 100, ignored('malformed')],
    ['bytes=-', 100, ignored('malformed')],
    ['bytes=5', 100, ignored('malformed')],
    ['bytes=5-4', 100, ignored('malformed')],
    ['bytes=0-1,5-4', 100, ignored('malformed')],
    ['bytes=200-300,20-10', 100, ignored('malformed')],
    ['bytes=0-1,x', 100, ignored('malformed')],
    ['bytes=+1-2', 100, ignored('malformed')],
    ['bytes=0x1-0x2', 100, ignored('malformed')],
    ['bytes=1.5-2', 100, ignored('malformed')],
    ['bytes=--5', 100, ignored('malformed')],
    ['bytes=-5-', 100, ignored('malformed')],
    ['bytes=1 - 2', 100, ignored('malformed')],
    ['bytes=1-2-3', 100, ignored('malformed')],
    ['bytes=١-٢', 100, ignored('malformed')],
    [`bytes=${HUGE}-1`, 100, ignored('malformed')],
    ['bytes=0-1;2-3', 100, ignored('malformed')],
    // abuse caps
    ['bytes=0-,1-,2-,3-,4-', 11, ignored('wasteful')],
    ['bytes=0-60,40-99', 100, ignored('wasteful')],
    ['bytes=0-0,0-0', 100, ranges([0, 0])],
    ['bytes=0-10,5-15,10-20', 100, ignored('overlapping')],
    ['bytes=50-51,40-41,30-31', 100, ignored('unordered')],
    ['bytes=50-51,40-41', 100, ranges([40, 41], [50, 51])],
  ];
  for (const [header, size, expected] of cases) {
    test(`${JSON.stringify(header)?.slice(0, 60)} over ${size} bytes`, () => {
      assert.deepEqual(parseRange(header, size), expected);
    });
  }

  test('more than maxRanges range-specs are ignored', () => {
    const specs = Array.from({ length: DEFAULT_MAX_RANGES + 1 }, (_, i) => `${i * 10}-${i * 10}`);
    assert.deepEqual(parseRange(`bytes=${specs.join(',')}`, 1000), ignored('too-many-ranges'));
    assert.equal(parseRange(`bytes=${specs.slice(1).join(',')}`, 1000).kind, 'ranges');
    assert.deepEqual(parseRange('bytes=0-0,2-2,4-4', 1000, { maxRanges: 2 }), ignored('too-many-ranges'));
  });

  test('empty list elements do not count towards maxRanges', () => {
    assert.deepEqual(parseRange('bytes=0-0,,,,,,2-2', 1000, { maxRanges: 2 }), ranges([0, 0], [2, 2]));
  });

  test('rejects invalid size and options', () => {
    for (const size of [-1, 1.5, Number.NaN, 2 ** 60]) {
      assert.throws(() => parseRange('bytes=0-0', size), isRecgateError);
    }
    assert.throws(
      () => parseRange('bytes=0-0', 10, { maxRanges: 0 }),
      (err: unknown) => isRecgateError(err) && /options\.maxRanges/.test(err.message),
    );
  });

  test('contentRange and unsatisfiedRange', () => {
    assert.equal(contentRange(0, 4, 9), 'bytes 0-4/9');
    assert.equal(unsatisfiedRange(9), 'bytes */9');
  });
});

/** Reference model for one syntactically valid range-spec, in BigInt so huge positions stay exact. */
function model(spec: { first?: bigint; last?: bigint }, size: number): RangeResult {
  const n = BigInt(size);
  if (spec.first === undefined) {
    const suffix = spec.last!;
    if (suffix === 0n || n === 0n) return UNSAT;
    const start = suffix >= n ? 0n : n - suffix;
    return ranges([Number(start), size - 1]);
  }
  if (spec.last !== undefined && spec.last < spec.first) return ignored('malformed');
  if (spec.first >= n) return UNSAT;
  const end = spec.last === undefined || spec.last >= n ? n - 1n : spec.last;
  return ranges([Number(spec.first), Number(end)]);
}

const position = fc.oneof(
  fc.bigInt({ min: 0n, max: 200n }),
  fc.bigInt({ min: 0n, max: 2n ** 53n + 10n }),
  fc.bigInt({ min: 0n, max: 10n ** 40n }),
);
const size = fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const spec = fc.oneof(
  fc.record({ first: position, last: position }),
  fc.record({ first: position }),
  fc.record({ last: position }),
);
const specText = (s: { first?: bigint; last?: bigint }, zeros: number) =>
  `${s.first === undefined ? '' : '0'.repeat(zeros) + s.first}-${s.last === undefined ? '' : s.last}`;

describe('parseRange properties', () => {
  test('any single valid range-spec matches the reference model and stays within the representation', () => {
    fc.assert(
      fc.property(spec, size, fc.nat(3), fc.constantFrom('bytes', 'BYTES', 'bYtEs'), (s, n, zeros, unit) => {
        const result = parseRange(`${unit}=${specText(s, zeros)}`, n);
        assert.deepEqual(result, model(s, n));
        if (result.kind === 'ranges') {
          for (const r of result.ranges) {
            assert.ok(r.start >= 0 && r.start <= r.end && r.end <= n - 1);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('multi-range results are ascending, disjoint, non-adjacent and within bounds', () => {
    fc.assert(
      fc.property(fc.array(spec, { minLength: 1, maxLength: 20 }), size, (specs, n) => {
        const result = parseRange(`bytes=${specs.map((s) => specText(s, 0)).join(', ')}`, n);
        if (result.kind !== 'ranges') return;
        let previousEnd = -2;
        for (const r of result.ranges) {
          assert.ok(r.start >= 0 && r.start <= r.end && r.end <= n - 1);
          assert.ok(r.start > previousEnd + 1, 'coalesced');
          previousEnd = r.end;
        }
      }),
      { numRuns: 1000 },
    );
  });

  test('never throws on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), size, (header, n) => {
        parseRange(header, n);
        parseRange(`bytes=${header}`, n);
      }),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('0', '1', '9', '-', ',', ' ', '\t', '=', 'b'), { maxLength: 60 }),
        size,
        (chars, n) => {
          parseRange(`bytes=${chars.join('')}`, n);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('huge inputs are handled fast', () => {
    const inputs = [
      `bytes=${'0-0,'.repeat(250_000)}`,
      `bytes=${','.repeat(1_000_000)}0-1`,
      `bytes=${'9'.repeat(1_000_000)}-`,
      `bytes=0-${'9'.repeat(1_000_000)}`,
      `bytes=-${'9'.repeat(1_000_000)}`,
      `bytes=${' '.repeat(1_000_000)}`,
      `${'b'.repeat(1_000_000)}=0-1`,
      `bytes=0-1${' '.repeat(1_000_000)}x`,
    ];
    const started = process.hrtime.bigint();
    for (const input of inputs) parseRange(input, 1000);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    // Generous bound: each input is linear work; a quadratic parser would take minutes here.
    assert.ok(ms < 2000, `took ${ms} ms`);
    assert.deepEqual(parseRange(inputs[0], 1000), ignored('too-many-ranges'));
    assert.deepEqual(parseRange(inputs[1], 1000), ranges([0, 1]));
    assert.deepEqual(parseRange(inputs[2], 1000), UNSAT);
    assert.deepEqual(parseRange(inputs[3], 1000), ranges([0, 999]));
  });
});
