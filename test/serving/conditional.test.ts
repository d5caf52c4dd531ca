import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  evaluatePreconditions,
  formatHttpDate,
  type HeaderValues,
  ifRangeAllows,
  isEntityTag,
  parseEntityTagList,
  parseHttpDate,
  strongCompare,
  weakCompare,
} from '../../src/serving/conditional.js';

const validators = { etag: '"RE1-100"', lastModified: new Date('2024-03-10T12:00:00.750Z') };
const LM = 'Sun, 10 Mar 2024 12:00:00 GMT';
const BEFORE = 'Sun, 10 Mar 2024 11:59:59 GMT';
const AFTER = 'Sun, 10 Mar 2024 12:00:01 GMT';

const evaluate = (headers: HeaderValues, method = 'GET') =>
  evaluatePreconditions(method, headers, validators);

describe('parseHttpDate', () => {
  const epoch = Date.UTC(1994, 10, 6, 8, 49, 37) / 1000;
  test('accepts the three forms RFC 9110 §5.6.7 requires', () => {
    assert.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), epoch);
    assert.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', new Date('2024-01-01Z')), epoch);
    assert.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), epoch);
    assert.equal(parseHttpDate('Sun Nov 16 08:49:37 1994'), epoch + 10 * 86400);
  });

  test('reads RFC 850 two-digit years within 50 years of now', () => {
    const now = new Date('2024-06-01Z');
    assert.equal(parseHttpDate('Friday, 01-Jan-70 00:00:00 GMT', now), Date.UTC(2070, 0, 1) / 1000);
    assert.equal(parseHttpDate('Saturday, 01-Jan-80 00:00:00 GMT', now), Date.UTC(1980, 0, 1) / 1000);
  });

  test('rejects anything else', () => {
    for (const bad of [
      '',
      'foo',
      '2024-03-10T12:00:00Z',
      '1710072000',
      'sun, 06 Nov 1994 08:49:37 GMT',
      'Sun, 06 nov 1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 08:49:37 UTC',
      'Sun, 06 Nov 1994 08:49:37 +0000',
      'Sun, 6 Nov 1994 08:49:37 GMT',
      'Sun, 31 Feb 1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 24:00:00 GMT',
      'Sun, 06 Nov 1994 08:60:00 GMT',
      'Sun, 00 Nov 1994 08:49:37 GMT',
      'Sun Nov  6 08:49:37 1994 GMT',
    ]) {
      assert.equal(parseHttpDate(bad), undefined, bad);
    }
  });

  test('round-trips formatHttpDate at one-second resolution', () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date('1970-01-01Z'), max: new Date('9999-12-31Z'), noInvalidDate: true }),
        (d) => {
          assert.equal(parseHttpDate(formatHttpDate(d)), Math.floor(d.getTime() / 1000));
        },
      ),
    );
  });

  test('never throws', () => {
    fc.assert(fc.property(fc.string(), (s) => void parseHttpDate(s)));
  });
});

describe('entity tags', () => {
  test('parses lists with OWS, empty members, weak tags and commas inside tags', () => {
    assert.equal(parseEntityTagList('*'), '*');
    assert.equal(parseEntityTagList(' * '), '*');
    assert.deepEqual(parseEntityTagList(' "foo",, W/"bar" ,"a,b"'), [
      { weak: false, opaque: '"foo"' },
      { weak: true, opaque: '"bar"' },
      { weak: false, opaque: '"a,b"' },
    ]);
    assert.deepEqual(parseEntityTagList('foo, "ok", w/"lower", "x"y, "unterminated'), [
      { weak: false, opaque: '"ok"' },
    ]);
    assert.deepEqual(parseEntityTagList(','), []);
  });

  test('strong and weak comparison (RFC 9110 §8.8.3.2 table)', () => {
    const w1 = { weak: true, opaque: '"1"' };
    const w2 = { weak: true, opaque: '"2"' };
    const s1 = { weak: false, opaque: '"1"' };
    assert.equal(strongCompare(w1, w1), false);
    assert.equal(weakCompare(w1, w1), true);
    assert.equal(strongCompare(w1, w2), false);
    assert.equal(weakCompare(w1, w2), false);
    assert.equal(strongCompare(w1, s1), false);
    assert.equal(weakCompare(w1, s1), true);
    assert.equal(strongCompare(s1, s1), true);
    assert.equal(weakCompare(s1, s1), true);
  });

  test('isEntityTag', () => {
    assert.equal(isEntityTag('"x"'), true);
    assert.equal(isEntityTag('W/"x"'), true);
    assert.equal(isEntityTag('""'), true);
    assert.equal(isEntityTag('x'), false);
    assert.equal(isEntityTag('"x'), false);
    assert.equal(isEntityTag('"a b"'), false);
  });

  test('never throws on arbitrary lists', () => {
    fc.assert(fc.property(fc.string(), (s) => void parseEntityTagList(s)));
  });
});

describe('evaluatePreconditions (RFC 9110 §13.2.2 order)', () => {
  const cases: [string, HeaderValues, string, string?][] = [
    ['no conditionals', {}, 'proceed'],
    ['If-Match *', { 'if-match': '*' }, 'proceed'],
    ['If-Match current', { 'if-match': '"RE1-100"' }, 'proceed'],
    ['If-Match in a list', { 'if-match': '"foo", "bar",\t"RE1-100" , "baz"' }, 'proceed'],
    ['If-Match other', { 'if-match': '"foo"' }, 'precondition-failed'],
    ['If-Match weak never matches', { 'if-match': 'W/"RE1-100"' }, 'precondition-failed'],
    ['If-Match garbage', { 'if-match': 'foo' }, 'precondition-failed'],
    ['If-Unmodified-Since = LM', { 'if-unmodified-since': LM }, 'proceed'],
    ['If-Unmodified-Since later', { 'if-unmodified-since': AFTER }, 'proceed'],
    ['If-Unmodified-Since earlier', { 'if-unmodified-since': BEFORE }, 'precondition-failed'],
    ['If-Unmodified-Since invalid', { 'if-unmodified-since': 'foo' }, 'proceed'],
    [
      'If-Match passing overrides If-Unmodified-Since',
      { 'if-match': '"RE1-100"', 'if-unmodified-since': BEFORE },
      'proceed',
    ],
    ['If-None-Match current', { 'if-none-match': '"RE1-100"' }, 'not-modified'],
    ['If-None-Match weak form of current', { 'if-none-match': '"x", W/"RE1-100"' }, 'not-modified'],
    ['If-None-Match *', { 'if-none-match': '*' }, 'not-modified'],
    ['If-None-Match other', { 'if-none-match': '"Foo"' }, 'proceed'],
    ['If-None-Match malformed', { 'if-none-match': ',' }, 'proceed'],
    ['If-None-Match for other methods', { 'if-none-match': '*' }, 'precondition-failed', 'PUT'],
    ['If-Modified-Since = LM', { 'if-modified-since': LM }, 'not-modified'],
    ['If-Modified-Since later', { 'if-modified-since': AFTER }, 'not-modified'],
    ['If-Modified-Since earlier', { 'if-modified-since': BEFORE }, 'proceed'],
    ['If-Modified-Since invalid', { 'if-modified-since': 'yesterday' }, 'proceed'],
    ['If-Modified-Since ignored for other methods', { 'if-modified-since': LM }, 'proceed', 'POST'],
    ['If-Modified-Since on HEAD', { 'if-modified-since': LM }, 'not-modified', 'HEAD'],
    [
      'If-None-Match miss overrides If-Modified-Since',
      { 'if-none-match': '"other"', 'if-modified-since': AFTER },
      'proceed',
    ],
    [
      'If-Match failure wins over If-None-Match',
      { 'if-match': '"other"', 'if-none-match': '"RE1-100"' },
      'precondition-failed',
    ],
    [
      'If-Unmodified-Since failure wins over If-Modified-Since',
      { 'if-unmodified-since': BEFORE, 'if-modified-since': AFTER },
      'precondition-failed',
    ],
  ];
  for (const [name, headers, expected, method] of cases) {
    test(name, () => assert.equal(evaluate(headers, method), expected));
  }

  test('an invalid Last-Modified disables date conditionals', () => {
    const v = { etag: '"x"', lastModified: new Date(Number.NaN) };
    assert.equal(evaluatePreconditions('GET', { 'if-modified-since': LM }, v), 'proceed');
    assert.equal(evaluatePreconditions('GET', { 'if-unmodified-since': BEFORE }, v), 'proceed');
    assert.equal(ifRangeAllows(LM, v), false);
  });
});

describe('ifRangeAllows', () => {
  const cases: [string, boolean][] = [
    ['"RE1-100"', true],
    [' "RE1-100" ', true],
    ['W/"RE1-100"', false],
    ['"RE1-101"', false],
    [LM, true],
    [BEFORE, false],
    [AFTER, false],
    ['Sunday, 10-Mar-24 12:00:00 GMT', true],
    ['foo', false],
    ['', false],
    ['"RE1-100", "x"', false],
  ];
  for (const [value, expected] of cases) {
    test(JSON.stringify(value), () => assert.equal(ifRangeAllows(value, validators), expected));
  }

  test('a weak current tag never allows the range', () => {
    assert.equal(ifRangeAllows('W/"x"', { etag: 'W/"x"', lastModified: validators.lastModified }), false);
  });
});
