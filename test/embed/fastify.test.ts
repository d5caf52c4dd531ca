/**
 * recgate inside a Fastify host (issue 15, item 1): the host registers the recordings routes under its own
 * prefix with its own authentication (a session cookie here), keeps its own routes, hooks and error
 * answers, and recgate's JWT scheme stays the default.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { JwtAuth } from '../../src/auth/jwt.js';
import type { Emulator } from '../../src/emulator/index.js';
import { createRecgate, fastifyRecgate, type Recgate } from '../../src/index.js';
import { sha256 } from '../helpers/common.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { codeOf, emulatorFor, get, optionsFor, playsRecordings, recordedCall } from './helpers.js';

/** The host's own session: a cookie naming the business (a real app would look a session id up). */
const session = (cookie: string | undefined) => /(?:^|;\s*)session=([\w.-]+)/.exec(cookie ?? '')?.[1] ?? null;

describe('embedded in a Fastify app', () => {
  let emulator: Emulator;
  let recgate: Recgate;
  let host: FastifyInstance;
  let base: string;
  const hookCalls: string[] = [];
  // Suite-long resources, released in the suite's `after` (a `before` hook's own cleanups run as it ends).
  const cleanups: Array<() => unknown> = [];
  const suite = { after: (fn: () => unknown) => cleanups.unshift(fn) };

  before(async () => {
    emulator = await emulatorFor(suite);
    recgate = await createRecgate(
      optionsFor(suite, emulator, {
        authenticate: async (req, request) => {
          hookCalls.push(request.url);
          const who = session(req.headers.cookie);
          if (who === 'down') throw new Error('session store unreachable');
          return who === 'broken' ? 'not a business id!' : who;
        },
      }),
    );
    host = Fastify();
    host.get('/hello', async () => ({ hello: 'host' }));
    host.setNotFoundHandler((_request, reply) => reply.code(404).send('host 404'));
    await host.register(recgate.plugin, { prefix: '/recordings' });
    base = await host.listen({ host: '127.0.0.1', port: 0 });
  });
  after(async () => {
    await host?.close();
    await recgate?.close();
    for (const cleanup of cleanups) await cleanup();
  });

  it('plays recordings under the prefix, with Range, tenant isolation and prefixed playback URLs', async () => {
    await playsRecordings({
      base,
      prefix: '/recordings',
      emulator,
      recgate,
      as: (businessId) => ({ cookie: `theme=dark; session=${businessId}` }),
    });
    assert.ok(hookCalls.length > 0 && hookCalls.every((url) => url.startsWith('/recordings/api/calls')));
  });

  it('answers 500 RECGATE_INTERNAL when the hook throws or returns something that is not a business id', async () => {
    const { callSid } = await recordedCall(emulator, recgate, 'biz-a', 2000);
    const answer = await get(`${base}/recordings/api/calls/${callSid}/download`, {
      headers: { cookie: 'session=broken' },
    });
    assert.equal(answer.status, 500);
    assert.equal(codeOf(answer), 'RECGATE_INTERNAL');
    // The host's bug stays in the log: the client sees the generic message.
    assert.doesNotMatch(answer.body.toString(), /business id/);
    const thrown = await get(`${base}/recordings/api/calls/${callSid}/download`, {
      headers: { cookie: 'session=down' },
    });
    assert.equal(thrown.status, 500);
    assert.equal(codeOf(thrown), 'RECGATE_INTERNAL');
    assert.doesNotMatch(thrown.body.toString(), /session store/);
  });

  it("leaves the host's routes and not-found answers alone; a bad SID under the prefix is recgate's 400", async () => {
    assert.deepEqual(JSON.parse((await get(`${base}/hello`)).body.toString()), { hello: 'host' });
    const unknown = await get(`${base}/recordings/nothing-here`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.toString(), 'host 404');
    const badSid = await get(`${base}/recordings/api/calls/CA123/download`, {
      headers: { cookie: 'session=biz-a' },
    });
    assert.equal(badSid.status, 400);
    assert.equal(codeOf(badSid), 'RECGATE_INVALID_CALL_SID');
    // The routes exist only under the prefix.
    assert.equal(
      (await get(`${base}/api/calls`, { headers: { cookie: 'session=biz-a' } })).body.toString(),
      'host 404',
    );
  });

  it('rejects options it cannot use, naming them', async () => {
    await assert.rejects(
      createRecgate({ ...optionsFor(suite, emulator), jwtSecret: 'short' }),
      /options\.jwtSecret/,
    );
    await assert.rejects(
      createRecgate({ ...optionsFor(suite, emulator), prefix: 'recordings/' }),
      /options\.prefix/,
    );
    await assert.rejects(
      createRecgate({ ...optionsFor(suite, emulator), twilio: { apiBase: emulator.url } }),
      /options\.twilio\.accountSid/,
    );
    await assert.rejects(
      // @ts-expect-error: a hook that is not a function, as plain JavaScript could pass
      createRecgate({ ...optionsFor(suite, emulator), authenticate: 'session' }),
      /options\.authenticate/,
    );
    await assert.rejects(recgate.registerCall({ callSid: 'CA1', businessId: 'biz-a' }), /call\.callSid/);
  });
});

describe('fastifyRecgate: the self-contained plugin', () => {
  it('defaults to bearer JWTs, opens with register and releases the data dir with the app', async (t) => {
    const emulator = await emulatorFor(t);
    const options = optionsFor(t, emulator);
    const token = await new JwtAuth(JWT_SECRET).sign('biz-a', 600);
    const serveOnce = async () => {
      const app = Fastify();
      await app.register(fastifyRecgate, { ...options, prefix: '/r' });
      const base = await app.listen({ host: '127.0.0.1', port: 0 });
      return { app, base };
    };
    const first = await serveOnce();
    // Calls registered through a recgate of its own on the same data dir: the call log is shared.
    const registrar = await createRecgate(options);
    const call = await recordedCall(emulator, registrar, 'biz-a', 5000);
    await registrar.close();
    const url = `${first.base}/r/api/calls/${call.callSid}/download`;
    const played = await get(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(played.status, 200);
    assert.equal(sha256(played.body), call.sha256);
    assert.equal((await get(url, { headers: { cookie: 'session=biz-a' } })).status, 401);
    await first.app.close();
    // Closed means released: a new app on the same data dir serves the cached file.
    const second = await serveOnce();
    t.after(() => second.app.close());
    const again = await get(`${second.base}/r/api/calls/${call.callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(sha256(again.body), call.sha256);
    const stats = (await (await fetch(`${emulator.url}/__emulator/stats`)).json()) as {
      total_media_requests: number;
    };
    assert.equal(stats.total_media_requests, 1);
  });
});

describe("a Fastify host whose logger is not pino's", () => {
  it('serves requests that join one download (recgate never asks the host logger for what pino alone has)', async (t) => {
    const emulator = await emulatorFor(t);
    const recgate = await createRecgate(
      optionsFor(t, emulator, { authenticate: async (req) => session(req.headers.cookie) }),
    );
    t.after(() => recgate.close());
    // Only what Fastify asks of a logger: no isLevelEnabled, no bindings.
    const lines: string[] = [];
    const logger = {
      level: 'debug',
      fatal: () => undefined,
      error: () => undefined,
      warn: () => undefined,
      info: () => undefined,
      debug: (obj: unknown, msg?: string) => lines.push(msg ?? String(obj)),
      trace: () => undefined,
      silent: () => undefined,
      child() {
        return this;
      },
    };
    const host = Fastify({ loggerInstance: logger as never });
    await host.register(recgate.plugin, { prefix: '/recordings' });
    const base = await host.listen({ host: '127.0.0.1', port: 0 });
    t.after(() => host.close());
    // Slow enough that the later requests join the first one's download.
    emulator.setThrottle({ ttfbMs: 200, bandwidth: 1_000_000, rangeSupport: true });
    const call = await recordedCall(emulator, recgate, 'acme', 50_000);
    const answers = await Promise.all(
      Array.from({ length: 4 }, () =>
        get(`${base}/recordings/api/calls/${call.callSid}/download`, { headers: { cookie: 'session=acme' } }),
      ),
    );
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      assert.equal(sha256(answer.body), call.sha256);
    }
    assert.equal(emulator.stats().total_media_requests, 1);
    assert.ok(lines.includes('Joining the download in flight'), 'the joiners logged through the host logger');
  });
});
