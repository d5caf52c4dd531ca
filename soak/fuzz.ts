/**
 * The fuzz loop's requests (issue 11, item 4): fast-check arbitraries for methods, paths (encoded, traversal,
 * overlong), headers (Range, If-Range, conditionals, hostile Authorization, odd content types), bodies, and raw
 * bytes an HTTP client refuses to send; and the two ways of sending them. test/soak/fuzz.test.ts runs them
 * against `recgate serve --workers 2`.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { type Agent, request } from 'undici';
import { JwtAuth } from '../src/auth/jwt.js';
import { PlaybackSigner } from '../src/auth/playback-url.js';
import type { CallSid } from '../src/sid.js';

/** Longest a request may take to answer in full; anything slower is a hang. */
export const ANSWER_BOUND_MS = 10_000;

/** What the generators draw from, made once the stack is up. */
export interface Context {
  calls: CallSid[];
  /** Authorization header values: the owner's valid token first, then the hostile ones. */
  authorizations: string[];
  /** Playback query strings: valid, tampered, expired, replayed for another call. */
  playbackQueries: string[];
  /** What no log line may hold: secrets, tokens sent, playback signatures. */
  secrets: string[];
}

/** A request for undici, or raw bytes for a socket. */
export type FuzzRequest =
  | { kind: 'http'; method: string; path: string; headers: Record<string, string>; body?: Buffer | string }
  | { kind: 'raw'; bytes: Buffer };

const hex = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 32, maxLength: 32 });
const printable = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
});

function sidArbitrary(ctx: Context): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...ctx.calls) },
    { weight: 2, arbitrary: hex.map((h) => `CA${h}`) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        'CA',
        `CA${'A'.repeat(32)}`,
        `ca${'a'.repeat(32)}`,
        `CA${'a'.repeat(33)}`,
        `RE${'a'.repeat(32)}`,
        '..',
        '%2e%2e',
        '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
        '..%2f..%2fetc%2fpasswd',
        '%00',
        `CA${'a'.repeat(31)}%00`,
        '%E0%A4%A',
        '%',
        '%%',
        '%C0%AE%C0%AE',
        '%D0%B0',
        '%EF%BC%A1',
        `CA${'a'.repeat(32)}%2Fdownload`,
        `CA${'a'.repeat(32)}%20`,
        '*',
        '~',
        '@',
      ),
    },
    { weight: 1, arbitrary: fc.integer({ min: 150, max: 9_000 }).map((n) => `CA${'a'.repeat(n)}`) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map(encodeURIComponent) },
  );
}

function pathArbitrary(ctx: Context): fc.Arbitrary<string> {
  const sid = sidArbitrary(ctx);
  const query = fc.oneof(
    { weight: 6, arbitrary: fc.constant('') },
    { weight: 3, arbitrary: fc.constantFrom(...ctx.playbackQueries).map((q) => `?${q}`) },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        '?limit=1',
        '?limit=0',
        '?limit=99999999999999999999',
        '?limit=-1',
        '?cursor=%%%',
        '?cursor=bm9wZQ',
        `?cursor=${'A'.repeat(600)}`,
        '?download=1',
        '?sig=&bid=&exp=',
        '?sig[]=a&sig[]=b',
        '?bid=acme&bid=globex&exp=1&exp=2&sig=a&sig=b',
        '?__proto__[x]=1',
        '?constructor=1&prototype=2',
        '?a=%00',
        `?${'x='.repeat(5_000)}`,
      ),
    },
    { weight: 1, arbitrary: printable.map((s) => `?${encodeURIComponent(s)}`) },
  );
  const template = fc.oneof(
    { weight: 8, arbitrary: sid.map((s) => `/api/calls/${s}/download`) },
    { weight: 2, arbitrary: sid.map((s) => `/api/calls/${s}`) },
    { weight: 2, arbitrary: fc.constant('/api/calls') },
    { weight: 2, arbitrary: sid.map((s) => `/api/calls/${s}/playback-url`) },
    { weight: 2, arbitrary: sid.map((s) => `/api/admin/calls/${s}`) },
    { weight: 1, arbitrary: fc.constant('/webhooks/twilio/recording-status') },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        '/healthz',
        '/readyz',
        '/metrics',
        '/',
        '/ui/app.js',
        '/ui/../package.json',
        '/ui/%2e%2e/package.json',
        '//api/calls',
        '/api//calls',
        '/api/calls/',
        '/API/CALLS',
        '/api/calls/download',
        '/__emulator/stats',
        '/.env',
        '/%2e%2e/%2e%2e/etc/passwd',
      ),
    },
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 12_000 }).map((n) => `/${'a/'.repeat(n)}`) },
  );
  return fc.tuple(template, query).map(([p, q]) => p + q);
}

const rangeValue = fc.oneof(
  fc.tuple(fc.nat(40_000), fc.nat(40_000)).map(([a, b]) => `bytes=${Math.min(a, b)}-${Math.max(a, b)}`),
  fc.nat(40_000).map((n) => `bytes=-${n}`),
  fc.nat(40_000).map((n) => `bytes=${n}-`),
  fc
    .array(fc.tuple(fc.nat(20_000), fc.nat(500)), { minLength: 2, maxLength: 30 })
    .map((rs) => `bytes=${rs.map(([a, d]) => `${a}-${a + d}`).join(',')}`),
  fc.integer({ min: 17, max: 3_000 }).map((n) => `bytes=${'0-0,'.repeat(n)}0-0`),
  fc.constantFrom(
    `bytes=${'9'.repeat(400)}-`,
    `bytes=0-${'9'.repeat(400)}`,
    'bytes=-0',
    'bytes=5-1',
    'BYTES=0-1',
    'bytes = 0-1',
    'bytes=\t0-1\t',
    'items=0-1',
    'bytes=0-1,,,,,,2-3',
    'bytes=0-100,50-150,25-175',
    'bytes=1-2,0-0,3-4,0-0',
    '',
  ),
  printable.map((s) => `bytes=${s}`),
);

const date = fc.constantFrom(
  'Sun, 06 Nov 1994 08:49:37 GMT',
  'Sunday, 06-Nov-94 08:49:37 GMT',
  'Sun Nov  6 08:49:37 1994',
  'Fri, 31 Dec 9999 23:59:59 GMT',
  'Thu, 01 Jan 1970 00:00:00 GMT',
  'Mon, 31 Feb 2025 00:00:00 GMT',
  'yesterday',
);
const tags = fc.constantFrom('*', '"x"', 'W/"x"', '"x", "y"', `"${'a'.repeat(4_000)}"`, ',,,', 'W/', '"');

function headersArbitrary(ctx: Context): fc.Arbitrary<Record<string, string>> {
  const rarely = <T>(a: fc.Arbitrary<T>) =>
    fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: a });
  return fc
    .record({
      // The owner's valid token half the time, so that many requests reach a recording.
      authorization: fc.oneof(
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 4, arbitrary: fc.constant(ctx.authorizations[0]) },
        { weight: 3, arbitrary: fc.constantFrom(...ctx.authorizations.slice(1)) },
      ),
      range: rarely(rangeValue),
      'if-range': rarely(fc.oneof(tags, date)),
      'if-match': rarely(tags),
      'if-none-match': rarely(tags),
      'if-modified-since': rarely(date),
      'if-unmodified-since': rarely(date),
      'content-type': rarely(
        fc.constantFrom(
          'application/json',
          'application/x-www-form-urlencoded',
          'text/plain',
          'multipart/form-data; boundary=x',
          'application/json; charset=utf-16',
          'application/jsonx',
          ';;;',
        ),
      ),
      'x-twilio-signature': rarely(printable),
      'x-request-id': rarely(fc.oneof(printable, fc.constant('a'.repeat(500)))),
      accept: rarely(fc.constantFrom('*/*', 'audio/*', 'text/html', '')),
      'x-forwarded-host': rarely(fc.constantFrom('evil.example', 'a'.repeat(300), '')),
      host: rarely(fc.constantFrom('evil.example', '127.0.0.1:1', '')),
    })
    .map((h) =>
      Object.fromEntries(Object.entries(h).filter((e): e is [string, string] => e[1] !== undefined)),
    );
}

const body = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.json().map(String) },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        business_id: fc.oneof(fc.constantFrom('acme', 'globex', '', '../x'), fc.anything()),
        parent_call_sid: fc.oneof(
          hex.map((h) => `CA${h}`),
          fc.anything(),
        ),
        recording_sid: fc.oneof(
          hex.map((h) => `RE${h}`),
          fc.anything(),
        ),
        duration_s: fc.anything(),
      },
      { requiredKeys: [] },
    ),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2_000 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 200_000 }).map((n) => 'x'.repeat(n)) },
  { weight: 1, arbitrary: fc.constantFrom('CallSid=CA1&RecordingSid=RE1', '{"a":', '{"__proto__":{"x":1}}') },
);

const rawRequest = fc
  .constantFrom(
    'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    'POST /api/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
    'GET /healthz HTTP/1.1\nHost: x\n\n',
    'GET /api/calls/\u0000/download HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n',
    'get /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
    'GET /healthz\r\n\r\n',
    `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    'GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
    'POST /webhooks/twilio/recording-status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'GET /api/calls/CA/download HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n',
    'GET http://evil.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n',
    '\r\n\r\n\r\n',
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
    'GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n',
  )
  .map((text) => ({ kind: 'raw' as const, bytes: Buffer.from(text, 'latin1') }));

export function requestArbitrary(ctx: Context): fc.Arbitrary<FuzzRequest> {
  const method = fc.oneof(
    { weight: 20, arbitrary: fc.constant('GET') },
    { weight: 6, arbitrary: fc.constantFrom('HEAD', 'POST', 'PUT') },
    { weight: 1, arbitrary: fc.constantFrom('DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH') },
  );
  const http = fc
    .record({ method, path: pathArbitrary(ctx), headers: headersArbitrary(ctx), body })
    .map(({ method: m, path: p, headers, body: b }): FuzzRequest => {
      const sendsBody = b !== undefined && m !== 'GET' && m !== 'HEAD' && m !== 'TRACE';
      const payload = typeof b === 'object' && !Buffer.isBuffer(b) ? JSON.stringify(b) : b;
      return sendsBody
        ? { kind: 'http', method: m, path: p, headers, body: payload as string | Buffer }
        : { kind: 'http', method: m, path: p, headers };
    });
  return fc.oneof({ weight: 30, arbitrary: http }, { weight: 1, arbitrary: rawRequest });
}

export interface Outcome {
  /** HTTP status, or 0 when the connection closed without a status line. */
  status: number;
  ms: number;
}

export async function sendHttp(
  agent: Agent,
  base: string,
  r: Extract<FuzzRequest, { kind: 'http' }>,
): Promise<Outcome> {
  const started = performance.now();
  const res = await request(`${base}${r.path}`, {
    method: r.method as 'GET',
    headers: r.headers,
    ...(r.body === undefined ? {} : { body: r.body }),
    dispatcher: agent,
    headersTimeout: ANSWER_BOUND_MS,
    bodyTimeout: ANSWER_BOUND_MS,
  });
  await res.body.dump({ limit: Number.POSITIVE_INFINITY });
  return { status: res.statusCode, ms: performance.now() - started };
}

export function sendRaw(port: number, bytes: Buffer): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw request hung: ${JSON.stringify(bytes.toString('latin1').slice(0, 80))}`));
    }, ANSWER_BOUND_MS);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      // One answer is all that is checked; the connection is not reused.
      if (/^HTTP\/1\.[01] \d{3}/.test(received)) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(received);
      resolve({ status: m ? Number(m[1]) : 0, ms: performance.now() - started });
    });
    socket.end(bytes);
  });
}

/**
 * The credentials and playback parameters the requests use, for `calls` (at least two) registered to business
 * `acme` at the gateway at `base`; `jwtSecret` and `adminToken` are the gateway's.
 */
export async function fuzzContext(
  base: string,
  calls: CallSid[],
  jwtSecret: string,
  adminToken: string,
): Promise<Context> {
  const key = new TextEncoder().encode(jwtSecret);
  const now = Math.floor(Date.now() / 1000);
  const acme = await new JwtAuth(jwtSecret).sign('acme', 3600);
  const expired = await new SignJWT({ business_id: 'acme' })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(now - 3600)
    .sign(key);
  const forged = await new JwtAuth('another-secret-entirely-'.padEnd(48, 'q')).sign('acme', 3600);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const none = `${b64({ alg: 'none' })}.${b64({ business_id: 'acme', exp: now + 3600 })}.`;
  const signer = new PlaybackSigner(jwtSecret);
  const live = new URLSearchParams({ ...signer.sign('acme', calls[0]!, new Date(Date.now() + 3_600_000)) });
  const stale = new URLSearchParams({ ...signer.sign('acme', calls[0]!, new Date(Date.now() - 60_000)) });
  const tampered = new URLSearchParams(live);
  tampered.set('sig', `${live.get('sig')!.slice(0, -2)}AA`);
  // A URL issued by the gateway itself, for the second call (replayed on the others).
  const issued = await request(`${base}/api/calls/${calls[1]}/playback-url`, {
    method: 'POST',
    headers: { authorization: `Bearer ${acme}` },
  });
  assert.equal(issued.statusCode, 200);
  const replay = new URL(((await issued.body.json()) as { url: string }).url).search.slice(1);
  return {
    calls,
    authorizations: [
      `Bearer ${acme}`,
      `Bearer ${await new JwtAuth(jwtSecret).sign('globex', 3600)}`,
      `Bearer ${expired}`,
      `Bearer ${forged}`,
      `Bearer ${none}`,
      `Bearer ${acme.slice(0, -1)}`,
      `Bearer ${adminToken}`,
      'Bearer',
      'Bearer ',
      'bearer x.y.z',
      `Bearer ${'A'.repeat(8_000)}`,
      `Bearer ${'a.'.repeat(3_000)}`,
      'Basic YWNtZTpwYXNzd29yZA==',
      'Digest username="x"',
      `Bearer ${acme} ${acme}`,
      '\tBearer\t\tx',
    ],
    playbackQueries: [live.toString(), stale.toString(), tampered.toString(), replay],
    secrets: [
      jwtSecret,
      adminToken,
      acme,
      acme.slice(acme.lastIndexOf('.') + 1),
      forged,
      expired,
      ...[live, stale, tampered, new URLSearchParams(replay)].map((q) => q.get('sig')!),
    ],
  };
}
