/**
 * The tenant matrix (issue 11, item 5): every route the gateway registers, as Fastify's `onRoute` hook
 * reports it (src/http/route-table.ts), under every method it serves, against every kind of credential a
 * client can forge or misuse. A route nobody classified here fails the test, so a new route cannot escape.
 *
 * It holds that:
 * - each (route, method, credential) answers the status and error code the README documents;
 * - "not yours" and "does not exist" are byte-identical (status, headers but the request id and date,
 *   body), for every route that names a call, with a bearer token and with a playback URL;
 * - a parent-call fallback never crosses into another business's call, whatever the way in (GET, HEAD,
 *   Range, a playback URL issued for the child);
 * - the admin API refuses a `parent_call_sid` registered to another business;
 * - any other method on a route's path answers 405 with `Allow`;
 * - no log line written during the run holds a secret: the JWT secret, any token sent, the admin token,
 *   Twilio's auth token and Basic credentials, a Basic value sent, any playback signature.
 *
 * test/http/tenancy.test.ts walks the parent fallback through the call list and details; test/http/api.test.ts
 * checks one route per case. This file is the cross product.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { PlaybackSigner } from '../../src/auth/playback-url.js';
import { routeTableOf } from '../../src/http/route-table.js';
import type { CallSid } from '../../src/sid.js';
import { captureLogs } from '../helpers/log-capture.js';
import { ADMIN_TOKEN, JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;
const b64json = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** How a route authenticates, which decides every answer below. */
type RouteKind = 'public' | 'bearer' | 'download' | 'admin' | 'webhook';

/** Every route, classified. A route missing here fails 'every route is classified'. */
const ROUTE_KINDS: Record<string, RouteKind> = {
  '/': 'public',
  '/healthz': 'public',
  '/readyz': 'public',
  '/metrics': 'public',
  '/ui/api.js': 'public',
  '/ui/app.css': 'public',
  '/ui/app.js': 'public',
  '/ui/favicon.svg': 'public',
  '/ui/format.js': 'public',
  '/ui/list.js': 'public',
  '/ui/player.js': 'public',
  '/ui/session.js': 'public',
  '/api/calls': 'bearer',
  '/api/calls/:callSid': 'bearer',
  '/api/calls/:callSid/playback-url': 'bearer',
  '/api/calls/:callSid/download': 'download',
  '/api/calls/:callSid/peaks': 'download',
  '/api/admin/calls/:callSid': 'admin',
  '/api/admin/calls/:callSid/recording': 'admin',
  '/api/admin/calls/:callSid/plays': 'admin',
  '/api/admin/businesses/:businessId/twilio-account': 'admin',
  '/api/admin/twilio-accounts': 'admin',
  '/webhooks/twilio/recording-status': 'webhook',
};

/** One way to present (or fail to present) a credential: an Authorization header and/or query parameters. */
interface Credential {
  name: string;
  authorization?: string;
  query?: Record<string, string>;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

describe('tenant matrix', () => {
  let stack: Stack;
  const { logger, lines } = captureLogs();
  /** Every secret the run used or sent; none may appear in a log line. */
  const secrets = new Set<string>();
  let acme: string;
  let globex: string;
  /** acme's call with a recording, the subject of every request. */
  let own: CallSid;
  /** Another acme call with a recording: a playback URL issued for it is replayed on `own`. */
  let own2: CallSid;
  /** globex's call with a recording. */
  let theirs: CallSid;
  let theirsRecording: string;
  let bad: Credential[];
  let replayed: Credential;
  /** Requests sent through {@link send}, for the diagnostics. */
  let sent = 0;

  before(async () => {
    stack = await startStack({ logger });
    acme = await stack.token('acme');
    globex = await stack.token('globex');
    for (const [business, setter] of [
      ['acme', (s: CallSid) => (own = s)],
      ['acme', (s: CallSid) => (own2 = s)],
      ['globex', (s: CallSid) => (theirs = s)],
    ] as const) {
      const rec = await stack.emulator.createRecording({ bytes: 8_000 });
      await stack.register({ businessId: business, callSid: rec.call_sid as CallSid });
      setter(rec.call_sid as CallSid);
      if (business === 'globex') theirsRecording = rec.recording_sid!;
    }

    const key = new TextEncoder().encode(JWT_SECRET);
    const expired = await new SignJWT({ business_id: 'acme' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now() - 3600)
      .sign(key);
    const forged = await new JwtAuth('not-the-gateway-secret-'.padEnd(48, 'z')).sign('acme', 600);
    const none = `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json({ business_id: 'acme', exp: now() + 600 })}.`;
    const basic = Buffer.from('acme:hunter2-basic-password').toString('base64');
    const issued = await playbackUrl(own, acme);
    const issuedForOwn2 = await playbackUrl(own2, acme);
    const signer = new PlaybackSigner(JWT_SECRET);
    const stale = signer.sign('acme', own, new Date(Date.now() - 60_000));
    const sig = issued.get('sig')!;
    const flipped = `${sig.slice(0, 10)}${sig[10] === 'A' ? 'B' : 'A'}${sig.slice(11)}`;
    const params = (p: URLSearchParams) => Object.fromEntries(p);

    bad = [
      { name: 'no credential' },
      { name: 'malformed: Bearer alone', authorization: 'Bearer' },
      { name: 'malformed: not a JWT', authorization: 'Bearer not.a.jwt' },
      { name: 'malformed: Basic', authorization: `Basic ${basic}` },
      { name: 'malformed: characters outside the token alphabet', authorization: 'Bearer a"b<c>' },
      { name: 'expired token', authorization: `Bearer ${expired}` },
      { name: 'wrong signature', authorization: `Bearer ${forged}` },
      { name: 'alg none', authorization: `Bearer ${none}` },
      { name: 'playback URL, signature tampered', query: { ...params(issued), sig: flipped } },
      { name: 'playback URL, business swapped', query: { ...params(issued), bid: 'globex' } },
      { name: 'playback URL, expiry extended', query: { ...params(issued), exp: String(now() + 86_400) } },
      { name: 'playback URL, expired', query: { ...stale } },
    ];
    replayed = { name: 'playback URL replayed for another call', query: params(issuedForOwn2) };
    for (const s of [
      JWT_SECRET,
      ADMIN_TOKEN,
      stack.emulator.authToken,
      acme,
      globex,
      expired,
      forged,
      none,
    ]) {
      secrets.add(s);
    }
    secrets.add(basic);
    secrets.add('hunter2-basic-password');
    secrets.add(Buffer.from(`${stack.emulator.accountSid}:${stack.emulator.authToken}`).toString('base64'));
    for (const s of [sig, flipped, issuedForOwn2.get('sig')!, stale.sig]) secrets.add(s);
    // A token cut short is still a leak: look for each token's signature alone too.
    for (const t of [acme, globex, expired, forged]) secrets.add(t.slice(t.lastIndexOf('.') + 1));
  });
  after(() => stack?.close());

  async function playbackUrl(call: CallSid, token: string): Promise<URLSearchParams> {
    const res = await request(`${stack.url}/api/calls/${call}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    const { url } = (await res.body.json()) as { url: string };
    const parsed = new URL(url);
    secrets.add(parsed.searchParams.get('sig')!);
    return parsed.searchParams;
  }

  async function send(
    method: string,
    path: string,
    credential: Credential,
    extra: Record<string, string> = {},
  ): Promise<Answer> {
    const query = credential.query ? `?${new URLSearchParams(credential.query)}` : '';
    const headers: Record<string, string> = { ...extra };
    if (credential.authorization !== undefined) headers.authorization = credential.authorization;
    let body: string | undefined;
    if (method === 'PUT' || method === 'POST') {
      headers['content-type'] = 'application/json';
      // Each admin PUT with a body it accepts, so the admin token's answer is a 200.
      body = JSON.stringify(path.endsWith('/twilio-account') ? { kind: 'main' } : { business_id: 'acme' });
    }
    sent++;
    const res = await request(`${stack.url}${path}${query}`, {
      method: method as 'GET',
      headers,
      ...(body === undefined ? {} : { body }),
    });
    return {
      status: res.statusCode,
      headers: res.headers,
      body: Buffer.from(await res.body.arrayBuffer()),
    };
  }

  /** The status, and the error code wherever there is a body (HEAD answers have none). */
  function assertError(answer: Answer, status: number, code: string, what: string): void {
    assert.equal(answer.status, status, `${what}: ${answer.body.toString().slice(0, 200)}`);
    if (answer.body.length > 0) assert.equal(JSON.parse(answer.body.toString()).error.code, code, what);
  }

  /** Status, headers (but the request id, date and connection management) and body, for comparison. */
  function comparable(answer: Answer) {
    const {
      'x-request-id': _id,
      date: _date,
      'keep-alive': _ka,
      connection: _c,
      ...headers
    } = answer.headers;
    return { status: answer.status, headers, body: answer.body.toString('latin1') };
  }

  const routes = () => {
    const table = routeTableOf(stack.gateway.app);
    assert.ok(table, 'the gateway keeps a route table');
    return table.routes();
  };
  const pathOf = (url: string, call: string) => url.replace(':callSid', call).replace(':businessId', 'acme');

  it('every route is classified, and every classified route exists', () => {
    const registered = routes().map((r) => r.url);
    assert.deepEqual(
      registered,
      Object.keys(ROUTE_KINDS).sort((a, b) => a.localeCompare(b)),
    );
  });

  it('refuses every forged, expired, malformed or misplaced credential on every route', async (t) => {
    let checked = 0;
    for (const route of routes()) {
      const kind = ROUTE_KINDS[route.url]!;
      for (const method of route.methods) {
        for (const credential of [...bad, replayed]) {
          const what = `${method} ${route.url} with ${credential.name}`;
          const answer = await send(method, pathOf(route.url, own), credential);
          checked++;
          if (kind === 'public') assert.equal(answer.status, 200, what);
          else if (kind === 'webhook') assertError(answer, 403, 'RECGATE_WEBHOOK_SIGNATURE', what);
          else assertError(answer, 401, 'RECGATE_UNAUTHENTICATED', what);
        }
      }
    }
    t.diagnostic(`${routes().length} routes, ${bad.length + 1} credentials, ${checked} requests`);
    assert.ok(checked > 400, `${checked} requests`);
  });

  it("answers another business's token on every route as documented", async () => {
    const other: Credential = { name: "another business's token", authorization: `Bearer ${globex}` };
    for (const route of routes()) {
      const kind = ROUTE_KINDS[route.url]!;
      for (const method of route.methods) {
        const what = `${method} ${route.url} with globex's token`;
        const answer = await send(method, pathOf(route.url, own), other);
        if (kind === 'public') assert.equal(answer.status, 200, what);
        else if (kind === 'webhook') assertError(answer, 403, 'RECGATE_WEBHOOK_SIGNATURE', what);
        else if (kind === 'admin') assertError(answer, 401, 'RECGATE_UNAUTHENTICATED', what);
        else if (route.url === '/api/calls') {
          assert.equal(answer.status, 200, what);
          if (method === 'GET') {
            const listed = JSON.parse(answer.body.toString()).calls.map(
              (c: { call_sid: string }) => c.call_sid,
            );
            assert.ok(!listed.includes(own), 'acme’s call is not in globex’s list');
            assert.ok(listed.includes(theirs));
          }
        } else assertError(answer, 404, 'RECGATE_NOT_FOUND', what);
      }
    }
  });

  /** A fresh acme call with a recording. */
  async function spare(): Promise<CallSid> {
    const rec = await stack.emulator.createRecording({ bytes: 8_000 });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    return rec.call_sid as CallSid;
  }

  it('the owner’s own credentials pass where they should, so the refusals above are not vacuous', async () => {
    const owner: Credential = { name: "acme's token", authorization: `Bearer ${acme}` };
    const admin: Credential = { name: 'admin token', authorization: `Bearer ${ADMIN_TOKEN}` };
    const url = await playbackUrl(own, acme);
    for (const route of routes()) {
      const kind = ROUTE_KINDS[route.url]!;
      for (const method of route.methods) {
        const path = pathOf(route.url, own);
        const what = `${method} ${route.url}`;
        if (kind === 'webhook') continue;
        if (kind === 'admin') {
          // A purge would take `own`'s recording away from the routes after it: it purges a call of its own.
          const target =
            method === 'DELETE' && route.url.endsWith('/recording') ? pathOf(route.url, await spare()) : path;
          const answer = await send(method, target, admin);
          assert.equal(answer.status, 200, `${what} with the admin token`);
          assertError(await send(method, path, owner), 401, 'RECGATE_UNAUTHENTICATED', `${what}, JWT`);
          continue;
        }
        assert.equal((await send(method, path, owner)).status, 200, what);
        if (kind === 'download') {
          const viaUrl = await send(method, path, { name: 'playback URL', query: Object.fromEntries(url) });
          assert.equal(viaUrl.status, 200, `${what} with its playback URL`);
        }
      }
    }
  });

  it('"not yours" and "does not exist" are byte-identical on every route that names a call', async () => {
    const other: Credential = { name: 'acme', authorization: `Bearer ${acme}` };
    let compared = 0;
    for (const route of routes()) {
      if (!route.url.includes(':callSid') || ROUTE_KINDS[route.url] === 'admin') continue;
      for (const method of route.methods) {
        for (const extra of [{}, { range: 'bytes=0-99' }, { 'if-none-match': '"x"' }] as Record<
          string,
          string
        >[]) {
          const notYours = await send(method, pathOf(route.url, theirs), other, extra);
          const missing = await send(method, pathOf(route.url, newCallSid()), other, extra);
          const what = `${method} ${route.url} ${JSON.stringify(extra)}`;
          assertError(notYours, 404, 'RECGATE_NOT_FOUND', what);
          assert.deepEqual(comparable(notYours), comparable(missing), what);
          compared++;
        }
      }
    }
    assert.ok(compared >= 12, `${compared} comparisons`);
  });

  it('"not yours" and "does not exist" are byte-identical with a validly signed playback URL too', async () => {
    // A playback URL binds the business, the call, the expiry and the variant. Both URLs here are signed
    // with the gateway's own key for acme, so both pass the signature check: one names a call nobody
    // registered, the other globex's call (a URL acme can never be issued: replayed, or made with a leaked
    // key). Past the signature, the gateway must not tell them apart.
    const signer = new PlaybackSigner(JWT_SECRET);
    const expires = new Date(Date.now() + 600_000);
    const signedFor = (call: CallSid, variant?: { channels: 1 | 2; format: 'mp3' | 'wav' }): Credential => {
      const signed = signer.sign('acme', call, expires, variant);
      secrets.add(signed.sig);
      const query: Record<string, string> = { ...signed };
      if (variant?.channels === 2) query.channels = '2';
      if (variant?.format === 'wav') query.format = 'wav';
      return { name: `acme's playback URL for ${call}`, query };
    };
    let compared = 0;
    for (const route of routes()) {
      if (ROUTE_KINDS[route.url] !== 'download') continue;
      for (const variant of [
        undefined,
        { channels: 2, format: 'mp3' } as const,
        { channels: 1, format: 'wav' } as const,
      ]) {
        const missingSid = newCallSid();
        const notYours = signedFor(theirs, variant);
        const missing = signedFor(missingSid, variant);
        for (const method of route.methods) {
          for (const extra of [{}, { range: 'bytes=0-99' }, { 'if-none-match': '"x"' }] as Record<
            string,
            string
          >[]) {
            const a = await send(method, pathOf(route.url, theirs), notYours, extra);
            const b = await send(method, pathOf(route.url, missingSid), missing, extra);
            const what = `${method} ${route.url} ${JSON.stringify({ variant, ...extra })}`;
            assertError(a, 404, 'RECGATE_NOT_FOUND', what);
            assert.deepEqual(comparable(a), comparable(b), what);
            compared++;
          }
        }
      }
    }
    assert.ok(compared >= 24, `${compared} comparisons`);
    // The refusals are not vacuous: the same signing, for acme's own call, plays.
    const own = await spare();
    const allowed = await send('GET', `/api/calls/${own}/download`, signedFor(own));
    assert.equal(allowed.status, 200);
    assert.equal(
      stack.emulator.stats().media_requests[theirsRecording] ?? 0,
      0,
      "globex's recording was never fetched",
    );
  });

  it('a parent-call fallback never crosses into another business, whatever the way in', async () => {
    const parent = newCallSid();
    const rec = await stack.emulator.createRecording({ parent_call_sid: parent, bytes: 8_000 });
    const child = rec.call_sid as CallSid;
    await stack.register({ businessId: 'globex', callSid: parent });
    // Straight into the call log, as a row written before the admin API refused such links.
    await stack.register({ businessId: 'acme', callSid: child, parentCallSid: parent });

    const bearer: Credential = { name: 'acme', authorization: `Bearer ${acme}` };
    const childUrl: Credential = {
      name: "the child's playback URL",
      query: Object.fromEntries(await playbackUrl(child, acme)),
    };
    const download = (call: string) => `/api/calls/${call}/download`;
    for (const method of ['GET', 'HEAD']) {
      for (const extra of [{}, { range: 'bytes=0-99' }, { range: 'bytes=-1' }] as Record<string, string>[]) {
        const missing = await send(method, download(newCallSid()), bearer, extra);
        for (const credential of [bearer, childUrl]) {
          const answer = await send(method, download(child), credential, extra);
          const what = `${method} child ${JSON.stringify(extra)} with ${credential.name}`;
          assert.equal(answer.status, 404, what);
          assert.deepEqual(comparable(answer), comparable(missing), what);
        }
        // The parent itself, asked for directly, is globex's: not found for acme.
        const direct = await send(method, download(parent), bearer, extra);
        assert.deepEqual(comparable(direct), comparable(missing));
      }
    }
    assert.equal(stack.emulator.stats().media_requests[rec.recording_sid!] ?? 0, 0, 'nothing was fetched');
  });

  it('the admin API refuses a parent_call_sid registered to another business, on create and update', async () => {
    const put = async (call: string, body: unknown) => {
      const res = await request(`${stack.url}/api/admin/calls/${call}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.statusCode, json: (await res.body.json()) as { error?: { code: string } } };
    };
    const fresh = newCallSid();
    const created = await put(fresh, { business_id: 'acme', parent_call_sid: theirs });
    assert.equal(created.status, 403);
    assert.equal(created.json.error?.code, 'RECGATE_FORBIDDEN');
    assert.equal(await stack.gateway.callLog.get(fresh), undefined, 'nothing registered');
    const updated = await put(own2, { business_id: 'acme', parent_call_sid: theirs });
    assert.equal(updated.status, 403);
    assert.equal(updated.json.error?.code, 'RECGATE_FORBIDDEN');
    assert.equal(
      (await stack.gateway.callLog.get(own2))?.parentCallSid ?? null,
      null,
      'the link was not made',
    );
    const same = await put(fresh, { business_id: 'acme', parent_call_sid: own });
    assert.equal(same.status, 201, 'a same-business parent is fine');
  });

  it('every other method on a route’s path answers 405 with Allow', async () => {
    const methods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
    for (const route of routes()) {
      for (const method of methods.filter((m) => !route.methods.includes(m))) {
        const answer = await send(method, pathOf(route.url, own), {
          name: 'acme',
          authorization: `Bearer ${acme}`,
        });
        const what = `${method} ${route.url}`;
        assertError(answer, 405, 'RECGATE_METHOD_NOT_ALLOWED', what);
        assert.equal(answer.headers.allow, route.methods.join(', '), what);
      }
    }
  });

  it('a request with two Host lines gets 400 (RFC 9112 §3.2), on every route', async () => {
    for (const route of routes()) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(stack.url).port), '127.0.0.1');
        let received = '';
        socket.on('data', (chunk: Buffer) => {
          received += chunk.toString('latin1');
        });
        socket.on('error', reject);
        socket.on('close', () => resolve(received));
        socket.end(
          `${route.methods[0]} ${pathOf(route.url, own)} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n` +
            `Authorization: Bearer ${acme}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
        );
      });
      assert.match(answer, /^HTTP\/1\.1 400 /, route.url);
    }
    // One Host line passes, also through inject(), whose requests lack some of Node's fields.
    assert.equal(
      (await stack.gateway.app.inject({ url: '/healthz', headers: { host: 'a.example' } })).statusCode,
      200,
    );
  });

  it('no log line of the run holds a secret', async (t) => {
    await new Promise((r) => setTimeout(r, 50));
    t.diagnostic(`${sent} requests, ${lines.length} log lines, ${secrets.size} secrets`);
    assert.ok(lines.length > 500, `${lines.length} log lines`);
    for (const line of lines) {
      for (const secret of secrets) {
        assert.ok(!line.includes(secret), `a secret (${secret.slice(0, 6)}…) leaked: ${line.slice(0, 300)}`);
      }
    }
  });
});
