/**
 * Range and conditional-request cases drawn from established servers' own test suites, as data, so the
 * same table runs against `serve()` (conformance.test.ts) and against the HTTP endpoint.
 *
 * Sources (each row names its own):
 * - Go net/http fs_test.go: ServeFileRangeTests, TestServeContent, TestServeFileRejectsInvalidSuffixLengths
 * - nginx-tests range.t and not_modified.t
 * - @fastify/send test/send.test.js ("with Range request", "with conditional-GET")
 * - Apache httpd-tests t/apache/byterange7.t and byterange3.t
 *
 * Each fixture reproduces the size (and, where cheap, the content) of the file the source test used.
 * Request headers may hold placeholders filled from the validators the server under test advertises:
 * `{etag}`, `{etag-changed}` (send's "etag with a 0 inserted"), `{last-modified}` and
 * `{last-modified±Ns}`. Rows whose expectation departs from the source carry `differs`, which says what
 * the source expects and why recgate answers otherwise (the policies are documented in src/serving).
 */
import assert from 'node:assert/strict';

export type FixtureName =
  | 'go-file'
  | 'go-index'
  | 'go-style'
  | 'nginx-t1'
  | 'nginx-empty'
  | 'send-nums'
  | 'apache-byteranges';

export interface ConformanceFixture {
  readonly name: FixtureName;
  readonly body: Buffer;
  /** Validators an in-memory source uses; an HTTP runner passes the ones its server advertises instead. */
  readonly etag: string;
  readonly lastModified: Date;
}

export interface ConformanceExpectation {
  readonly status: number;
  /** Exact Content-Range; `null` means the header must be absent. Unchecked when omitted. */
  readonly contentRange?: string | null;
  /**
   * `'full'`: the whole fixture; `[start, endExclusive]`: that slice; `'empty'`: no bytes.
   * Unchecked when omitted (a 412 or 416 body is the endpoint's business).
   */
  readonly body?: 'full' | 'empty' | readonly [number, number];
  /** multipart/byteranges parts, in order, as inclusive `[start, end]`. */
  readonly parts?: readonly (readonly [number, number])[];
}

export interface ConformanceCase {
  readonly name: string;
  /** Where the row comes from: suite, file and test. */
  readonly source: string;
  readonly fixture: FixtureName;
  readonly method: 'GET' | 'HEAD';
  readonly headers: Readonly<Record<string, string>>;
  readonly expect: ConformanceExpectation;
  /** Present when recgate deliberately answers differently from the source; says how and why. */
  readonly differs?: string;
}

/** What a runner got back; header names lowercase. */
export interface ConformanceResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body: Buffer;
}

/** Sends one case's request (headers already resolved) to the server under test. */
export type ConformanceRunner = (
  request: { method: 'GET' | 'HEAD'; headers: Record<string, string> },
  fixture: ConformanceFixture,
) => Promise<ConformanceResponse>;

const modified = new Date('2014-06-25T17:12:18.123Z');

function fixture(name: FixtureName, body: Buffer | string): ConformanceFixture {
  return {
    name,
    body: typeof body === 'string' ? Buffer.from(body, 'latin1') : body,
    etag: `"conf-${name}"`,
    lastModified: modified,
  };
}

export const FIXTURES: Readonly<Record<FixtureName, ConformanceFixture>> = {
  // Go src/net/http/testdata/file (testFileLen = 11).
  'go-file': fixture('go-file', '0123456789\n'),
  // Go src/net/http/testdata/index.html.
  'go-index': fixture('go-index', 'index.html says hello\n'),
  // Go src/net/http/testdata/style.css (8 bytes); the .123 s mtime is TestServeContent's "nanos" case.
  'go-style': fixture('go-style', 'body {}\n'),
  // nginx-tests range.t: join('', map { sprintf "X%03dXXXXXX", $_ } (0 .. 99)).
  'nginx-t1': fixture(
    'nginx-t1',
    Array.from({ length: 100 }, (_, i) => `X${String(i).padStart(3, '0')}XXXXXX`).join(''),
  ),
  // nginx-tests not_modified.t: $t->write_file('t', '').
  'nginx-empty': fixture('nginx-empty', ''),
  // @fastify/send test/fixtures/nums.txt.
  'send-nums': fixture('send-nums', '123456789'),
  // httpd-tests byterange7.t: sprintf("%04d", $_) for 1 .. 10000 (40001 bytes: "10000" has five digits).
  'apache-byteranges': fixture(
    'apache-byteranges',
    Array.from({ length: 10000 }, (_, i) => String(i + 1).padStart(4, '0')).join(''),
  ),
};

const GO_RANGE = 'go net/http fs_test.go ServeFileRangeTests';
const GO_SUFFIX = 'go net/http fs_test.go TestServeFileRejectsInvalidSuffixLengths';
const GO_CONTENT = 'go net/http fs_test.go TestServeContent';
const NGINX_RANGE = 'nginx-tests range.t';
const NGINX_NM = 'nginx-tests not_modified.t';
const SEND_RANGE = '@fastify/send test/send.test.js "with Range request"';
const SEND_COND = '@fastify/send test/send.test.js "with conditional-GET"';
const APACHE7 = 'httpd-tests t/apache/byterange7.t';
const APACHE3 = 'httpd-tests t/apache/byterange3.t';

const HEAD_RANGE_DIFFERS =
  'Go answers HEAD with Range as 206; RFC 9110 §14.2 defines range handling for GET only, so recgate ' +
  'answers HEAD with the 200 headers';

type Row = Omit<ConformanceCase, 'method'> & { method?: 'GET' | 'HEAD' };
const row = (r: Row): ConformanceCase => ({ method: 'GET', ...r });

const goRange = (range: string, expect: ConformanceExpectation, differs?: string) =>
  row({
    name: `Range: ${range || '(none)'}`,
    source: GO_RANGE,
    fixture: 'go-file',
    headers: range === '' ? {} : { Range: range },
    expect,
    ...(differs === undefined ? {} : { differs }),
  });
const single = (start: number, endExclusive: number, size: number): ConformanceExpectation => ({
  status: 206,
  contentRange: `bytes ${start}-${endExclusive - 1}/${size}`,
  body: [start, endExclusive],
});
const unsatisfiable = (size: number): ConformanceExpectation => ({
  status: 416,
  contentRange: `bytes */${size}`,
});
const FULL: ConformanceExpectation = { status: 200, contentRange: null, body: 'full' };
const multipart = (...parts: [number, number][]): ConformanceExpectation => ({
  status: 206,
  contentRange: null,
  parts,
});

const apacheRanges = (n: number) =>
  Array.from({ length: n }, (_, i) => `${i * 100}-${i * 100 + 1}`).join(',');

export const CONFORMANCE_CASES: readonly ConformanceCase[] = [
  // go net/http fs_test.go ServeFileRangeTests (testFileLen = 11)
  goRange('', FULL),
  goRange('bytes=0-4', single(0, 5, 11)),
  goRange('bytes=2-', single(2, 11, 11)),
  goRange('bytes=-5', single(6, 11, 11)),
  goRange('bytes=3-7', single(3, 8, 11)),
  goRange('bytes=20-', unsatisfiable(11)),
  goRange('bytes=0-0,-2', multipart([0, 0], [9, 10])),
  goRange('bytes=0-1,5-8', multipart([0, 1], [5, 8])),
  goRange('bytes=0-1,5-', multipart([0, 1], [5, 10])),
  goRange('bytes=5-1000', single(5, 11, 11)),
  goRange('bytes=0-,1-,2-,3-,4-', FULL),
  goRange('bytes=0-9', single(0, 10, 11)),
  goRange('bytes=0-10', single(0, 11, 11)),
  goRange('bytes=0-11', single(0, 11, 11)),
  goRange('bytes=10-11', single(10, 11, 11)),
  goRange('bytes=10-', single(10, 11, 11)),
  goRange('bytes=11-', unsatisfiable(11)),
  goRange('bytes=11-12', unsatisfiable(11)),
  goRange('bytes=12-12', unsatisfiable(11)),
  goRange('bytes=11-100', unsatisfiable(11)),
  goRange('bytes=12-100', unsatisfiable(11)),
  goRange('bytes=100-', unsatisfiable(11)),
  goRange('bytes=100-1000', unsatisfiable(11)),

  // go net/http fs_test.go TestServeFileRejectsInvalidSuffixLengths (index.html, 22 bytes)
  ...(
    [
      ['bytes=--6', FULL, 'Go answers 416 "invalid range"; recgate ignores malformed Range headers (200)'],
      ['bytes=--0', FULL, 'Go answers 416 "invalid range"; recgate ignores malformed Range headers (200)'],
      ['bytes=---0', FULL, 'Go answers 416 "invalid range"; recgate ignores malformed Range headers (200)'],
      ['bytes=-6', single(16, 22, 22)],
      ['bytes=6-', single(6, 22, 22)],
      ['bytes=-6-', FULL, 'Go answers 416 "invalid range"; recgate ignores malformed Range headers (200)'],
      [
        'bytes=-0',
        unsatisfiable(22),
        'Go answers 206 with an empty body; RFC 9110 §14.1.1 makes a zero suffix-length unsatisfiable (416)',
      ],
      ['bytes=', FULL],
    ] as [string, ConformanceExpectation, string?][]
  ).map(([range, expect, differs]) =>
    row({
      name: `Range: ${range}`,
      source: GO_SUFFIX,
      fixture: 'go-index',
      headers: { Range: range },
      expect,
      ...(differs === undefined ? {} : { differs }),
    }),
  ),

  // go net/http fs_test.go TestServeContent (style.css, 8 bytes); Go runs every row for GET and HEAD
  ...(
    [
      ['not_modified_modtime', { 'If-Modified-Since': '{last-modified}' }, { status: 304 }],
      ['not_modified_etag', { 'If-None-Match': '{etag}' }, { status: 304 }],
      ['not_modified_etag_no_seek', { 'If-None-Match': '"baz", W/{etag}' }, { status: 304 }],
      ['if_none_match_mismatch', { 'If-None-Match': '"Foo"' }, { status: 200, body: 'full' }],
      ['if_none_match_malformed', { 'If-None-Match': ',' }, { status: 200, body: 'full' }],
      ['range_good', { Range: 'bytes=0-4' }, single(0, 5, 8)],
      ['range_match', { Range: 'bytes=0-4', 'If-Range': '{etag}' }, single(0, 5, 8)],
      ['range_match_weak_etag', { Range: 'bytes=0-4', 'If-Range': 'W/{etag}' }, FULL],
      ['range_no_overlap', { Range: 'bytes=10-20' }, unsatisfiable(8)],
      ['range_no_match', { Range: 'bytes=0-4', 'If-Range': '"B"' }, FULL],
      ['range_with_modtime_nanos', { Range: 'bytes=0-4', 'If-Range': '{last-modified}' }, single(0, 5, 8)],
      ['range_with_modtime_mismatch', { Range: 'bytes=0-4', 'If-Range': '{last-modified+1s}' }, FULL],
      ['ifmatch_matches', { 'If-Match': '"Z", {etag}' }, { status: 200, body: 'full' }],
      ['ifmatch_star', { 'If-Match': '*' }, { status: 200, body: 'full' }],
      ['ifmatch_failed', { 'If-Match': '"B"' }, { status: 412 }],
      ['ifmatch_fails_on_weak_etag', { 'If-Match': 'W/{etag}' }, { status: 412 }],
      [
        'if_unmodified_since_true',
        { 'If-Unmodified-Since': '{last-modified}' },
        { status: 200, body: 'full' },
      ],
      ['if_unmodified_since_false', { 'If-Unmodified-Since': '{last-modified-2s}' }, { status: 412 }],
    ] as [string, Record<string, string>, ConformanceExpectation][]
  ).flatMap(([name, headers, expect]) => {
    const get = row({ name, source: GO_CONTENT, fixture: 'go-style', headers, expect });
    const headExpect: ConformanceExpectation =
      expect.status === 206 || expect.status === 416
        ? { status: 200, contentRange: null, body: 'empty' }
        : { ...expect, ...(expect.body === undefined ? {} : { body: 'empty' as const }) };
    const headDiffers = expect.status === 206 || expect.status === 416 ? { differs: HEAD_RANGE_DIFFERS } : {};
    return [
      get,
      row({
        name: `${name} (HEAD)`,
        source: GO_CONTENT,
        fixture: 'go-style',
        method: 'HEAD',
        headers,
        expect: headExpect,
        ...headDiffers,
      }),
    ];
  }),

  // nginx-tests range.t (t1.html, 1000 bytes)
  ...(
    [
      ['range request', 'bytes=0-8', single(0, 9, 1000)],
      ['final bytes', 'bytes=-10', single(990, 1000, 1000)],
      ['final bytes explicit', 'bytes=990-', single(990, 1000, 1000)],
      ['more than length', 'bytes=990-1990', single(990, 1000, 1000)],
      [
        'multipart',
        'bytes=0-9, -10, 10-19',
        multipart([0, 19], [990, 999]),
        'nginx sends three parts in request order; recgate coalesces the adjacent 0-9 and 10-19 and sorts (RFC 9110 §14.2 allows both)',
      ],
      [
        'multipart big',
        'bytes=0-9, -10, 100000-, 10-19',
        multipart([0, 19], [990, 999]),
        'nginx sends three parts in request order; recgate coalesces the adjacent 0-9 and 10-19 and sorts (RFC 9110 §14.2 allows both)',
      ],
      ['not satisfiable', 'bytes=100000-', unsatisfiable(1000)],
    ] as [string, string, ConformanceExpectation, string?][]
  ).map(([name, range, expect, differs]) =>
    row({
      name,
      source: NGINX_RANGE,
      fixture: 'nginx-t1',
      headers: { Range: range },
      expect,
      ...(differs === undefined ? {} : { differs }),
    }),
  ),

  // nginx-tests not_modified.t (empty file; "if_modified_since before")
  ...(
    [
      ['0x7F000000', { 'If-Modified-Since': 'Wed, 08 Jul 2037 22:53:52 GMT' }, 304],
      ['0x7FFFFFFF', { 'If-Modified-Since': 'Tue, 19 Jan 2038 03:14:07 GMT' }, 304],
      ['if-none-match', { 'If-None-Match': '{etag}' }, 304],
      ['if-none-match fail', { 'If-None-Match': '"foo"' }, 200],
      ['if-none-match with complex list', { 'If-None-Match': '"foo", "bar", {etag} , "baz"' }, 304],
      ['if-none-match all', { 'If-None-Match': '*' }, 304],
      ['if-match', { 'If-Match': '{etag}' }, 200],
      ['if-match fail', { 'If-Match': '"foo"' }, 412],
      ['if-match with complex list', { 'If-Match': '"foo", "bar", \t{etag} , "baz"' }, 200],
      ['if-match all', { 'If-Match': '*' }, 200],
    ] as [string, Record<string, string>, number][]
  ).map(([name, headers, status]) =>
    row({
      name,
      source: NGINX_NM,
      fixture: 'nginx-empty',
      headers,
      expect: status === 200 ? { status, body: 'empty' } : { status },
    }),
  ),

  // @fastify/send test/send.test.js "with Range request" (nums.txt, 9 bytes)
  ...(
    [
      ['should support byte ranges', { Range: 'bytes=0-4' }, single(0, 5, 9)],
      ['should ignore non-byte ranges', { Range: 'items=0-4' }, FULL],
      ['should be inclusive', { Range: 'bytes=0-0' }, single(0, 1, 9)],
      ['should set Content-Range', { Range: 'bytes=2-5' }, single(2, 6, 9)],
      ['should support -n', { Range: 'bytes=-3' }, single(6, 9, 9)],
      ['should support n-', { Range: 'bytes=3-' }, single(3, 9, 9)],
      ['should set Content-Length to the # of octets transferred', { Range: 'bytes=2-3' }, single(2, 4, 9)],
      [
        'last-byte-pos greater than the length is taken as length - 1',
        { Range: 'bytes=2-50' },
        single(2, 9, 9),
      ],
      ['first-byte-pos greater than the length: 416', { Range: 'bytes=9-50' }, unsatisfiable(9)],
      ['syntactically invalid: 200 and the entire contents', { Range: 'asdf' }, FULL],
      [
        'multiple ranges: 200 and the entire contents',
        { Range: 'bytes=1-1,3-' },
        multipart([1, 1], [3, 8]),
        'send has no multipart support and answers 200; recgate serves multipart/byteranges',
      ],
      ['multiple ranges: 206 if all ranges can be combined', { Range: 'bytes=1-2,3-5' }, single(1, 6, 9)],
      ['if-range: parts when etag unchanged', { Range: 'bytes=0-0', 'If-Range': '{etag}' }, single(0, 1, 9)],
      ['if-range: 200 when etag changed', { Range: 'bytes=0-0', 'If-Range': '{etag-changed}' }, FULL],
      [
        'if-range: parts when modified unchanged',
        { Range: 'bytes=0-0', 'If-Range': '{last-modified}' },
        single(0, 1, 9),
      ],
      [
        'if-range: 200 when modified changed',
        { Range: 'bytes=0-0', 'If-Range': '{last-modified-20s}' },
        FULL,
      ],
      ['if-range: 200 when invalid value', { Range: 'bytes=0-0', 'If-Range': 'foo' }, FULL],
    ] as [string, Record<string, string>, ConformanceExpectation, string?][]
  ).map(([name, headers, expect, differs]) =>
    row({
      name,
      source: SEND_RANGE,
      fixture: 'send-nums',
      headers,
      expect,
      ...(differs === undefined ? {} : { differs }),
    }),
  ),

  // @fastify/send test/send.test.js "with conditional-GET" (name.txt in send; nums.txt here)
  ...(
    [
      ['If-Match: 200 when "*"', { 'If-Match': '*' }, 200],
      ['If-Match: 412 when ETag unmatched', { 'If-Match': ' "foo",, "bar" ,' }, 412],
      ['If-Match: 200 when ETag matched /1', { 'If-Match': '"foo", "bar", {etag}' }, 200],
      ['If-Match: 200 when ETag matched /2', { 'If-Match': '"foo", {etag}, "bar"' }, 200],
      ['If-Modified-Since: 304 when unmodified', { 'If-Modified-Since': '{last-modified}' }, 304],
      ['If-Modified-Since: 200 when modified', { 'If-Modified-Since': '{last-modified-60s}' }, 200],
      [
        'If-Modified-Since: 200 when cache-control no-cache',
        { 'If-Modified-Since': '{last-modified}', 'Cache-Control': 'no-cache' },
        304,
        'send answers 200; request no-cache is a directive for caches (RFC 9111 §5.2.1.4), the origin answers the conditional',
      ],
      ['If-None-Match: 304 when ETag matched', { 'If-None-Match': '{etag}' }, 304],
      ['If-None-Match: 200 when ETag unmatched', { 'If-None-Match': '"123"' }, 200],
      ['If-None-Match: 304 for * on an existing file', { 'If-None-Match': '*' }, 304],
      [
        'If-None-Match: 200 when cache-control no-cache',
        { 'If-None-Match': '{etag}', 'Cache-Control': 'no-cache' },
        304,
        'send answers 200; request no-cache is a directive for caches (RFC 9111 §5.2.1.4), the origin answers the conditional',
      ],
      ['If-Unmodified-Since: 200 when unmodified', { 'If-Unmodified-Since': '{last-modified}' }, 200],
      ['If-Unmodified-Since: 412 when modified', { 'If-Unmodified-Since': '{last-modified-60s}' }, 412],
      ['If-Unmodified-Since: 200 when invalid date', { 'If-Unmodified-Since': 'foo' }, 200],
    ] as [string, Record<string, string>, number, string?][]
  ).map(([name, headers, status, differs]) =>
    row({
      name,
      source: SEND_COND,
      fixture: 'send-nums',
      headers,
      expect: status === 200 ? FULL : { status },
      ...(differs === undefined ? {} : { differs }),
    }),
  ),

  // httpd-tests t/apache/byterange7.t (40001 bytes): "send 200 response if range invalid", with and without "bytes="
  ...['', ',', '7-1', 'foo', '1-4,x', '1-4,5-2', '100000-110000,5-2'].flatMap((spec) =>
    [spec, `bytes=${spec}`].map((range) =>
      row({
        name: `invalid range ${JSON.stringify(range)}`,
        source: APACHE7,
        fixture: 'apache-byteranges',
        headers: { Range: range },
        expect: FULL,
      }),
    ),
  ),
  // httpd-tests t/apache/byterange7.t: "send 416 if no range satisfiable"
  ...(
    [
      ['100000-110000', unsatisfiable(40001)],
      ['100000-110000,200000-', unsatisfiable(40001)],
      ['1000-200000', single(1000, 40001, 40001)],
      ['100000-110000,1000-2000', single(1000, 2001, 40001)],
      ['100000-110000,2000-1000', FULL],
    ] as [string, ConformanceExpectation][]
  ).map(([spec, expect]) =>
    row({
      name: `bytes=${spec}`,
      source: APACHE7,
      fixture: 'apache-byteranges',
      headers: { Range: `bytes=${spec}` },
      expect,
    }),
  ),
  // httpd-tests t/apache/byterange7.t: "check content-length for (multi-)range responses"
  ...[1, 2, 10, 50, 100].map((n) => {
    const parts = Array.from({ length: n }, (_, i): [number, number] => [i * 100, i * 100 + 1]);
    const tooMany = n > 16;
    return row({
      name: `${n} two-byte ranges`,
      source: APACHE7,
      fixture: 'apache-byteranges',
      headers: { Range: `bytes=${apacheRanges(n)}` },
      expect: tooMany ? FULL : n === 1 ? single(0, 2, 40001) : multipart(...parts),
      ...(tooMany
        ? {
            differs:
              'Apache (MaxRanges 200) answers 206; recgate ignores more than 16 ranges (maxRanges) and answers 200',
          }
        : {}),
    });
  }),
  // httpd-tests t/apache/byterange3.t: overlapping, out-of-order ranges merged into one Content-Range
  row({
    name: 'four overlapping ranges',
    source: APACHE3,
    fixture: 'apache-byteranges',
    headers: { Range: 'bytes=5-8192,0-8191,5-8182,0-8191' },
    expect: FULL,
    differs:
      'Apache merges them into one 206 (bytes 0-8192); recgate ignores more than two overlapping ranges ' +
      '(RFC 9110 §14.2 names them a sign of abuse) and answers 200 with everything',
  }),
];

/** Fills a case's header placeholders from the validators the server under test advertises. */
export function resolveHeaders(
  c: ConformanceCase,
  validators: { etag: string; lastModified: string },
): Record<string, string> {
  const lastModified = Date.parse(validators.lastModified);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(c.headers)) {
    out[name] = value
      .replaceAll('{etag-changed}', validators.etag.replace(/"(.)/, '"0$1'))
      .replaceAll('{etag}', validators.etag)
      .replace(
        /\{last-modified(?:([+-])(\d+)s)?\}/g,
        (_, sign: string | undefined, n: string | undefined) => {
          const offset = sign === undefined ? 0 : (sign === '+' ? 1 : -1) * Number(n) * 1000;
          return new Date(lastModified + offset).toUTCString();
        },
      );
  }
  return out;
}

/** Asserts that `response` is what the case expects; `body` is the full representation being served. */
export function checkConformance(c: ConformanceCase, body: Buffer, response: ConformanceResponse): void {
  const label = `${c.source}: ${c.name}`;
  const { expect } = c;
  assert.equal(response.status, expect.status, `${label}: status`);
  if (expect.contentRange !== undefined) {
    assert.equal(
      response.headers['content-range'],
      expect.contentRange ?? undefined,
      `${label}: Content-Range`,
    );
  }
  if (expect.body !== undefined) {
    const wanted =
      expect.body === 'full'
        ? body
        : expect.body === 'empty'
          ? Buffer.alloc(0)
          : body.subarray(expect.body[0], expect.body[1]);
    assert.deepEqual(response.body, wanted, `${label}: body`);
  }
  if (expect.status === 200 || expect.status === 206) {
    const length = c.method === 'HEAD' && expect.body === 'empty' ? undefined : String(response.body.length);
    if (length !== undefined)
      assert.equal(response.headers['content-length'], length, `${label}: Content-Length`);
  }
  if (expect.parts !== undefined) {
    const type = response.headers['content-type'] ?? '';
    const match = /^multipart\/byteranges; ?boundary=("?)([^";]+)\1$/.exec(type);
    assert.ok(match, `${label}: Content-Type ${type} is multipart/byteranges`);
    const parts = splitMultipart(response.body, match[2]!);
    assert.deepEqual(
      parts.map((p) => p.contentRange),
      expect.parts.map(([s, e]) => `bytes ${s}-${e}/${body.length}`),
      `${label}: part ranges`,
    );
    parts.forEach((p, i) => {
      const [s, e] = expect.parts![i]!;
      assert.deepEqual(p.body, body.subarray(s, e + 1), `${label}: part ${i} body`);
    });
  }
}

function splitMultipart(
  body: Buffer,
  boundary: string,
): { contentRange: string | undefined; body: Buffer }[] {
  const text = body.toString('latin1');
  const delimiter = `--${boundary}`;
  const pieces = text.split(new RegExp(`(?:^|\\r\\n)${delimiter.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  // pieces[0] is the preamble; the last starts with "--" (the close delimiter).
  assert.ok(pieces.length >= 3 && pieces[pieces.length - 1]!.startsWith('--'), 'multipart framing');
  return pieces.slice(1, -1).map((piece) => {
    const split = piece.indexOf('\r\n\r\n');
    const head = piece.slice(0, split);
    const range = /\r\ncontent-range: *([^\r\n]*)/i.exec(head);
    return { contentRange: range?.[1]?.trim(), body: Buffer.from(piece.slice(split + 4), 'latin1') };
  });
}
