/**
 * recgate inside an Express 5 app and a plain Node `http` server (issue 15, item 1): the same routes as the
 * Fastify plugin, reached through an internal Fastify instance's `routing`, which streams; paths recgate
 * does not own go on to the host.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import type { Emulator } from '../../src/emulator/index.js';
import { createRecgate, type Recgate } from '../../src/index.js';
import { sha256 } from '../helpers/common.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { codeOf, emulatorFor, get, optionsFor, playsRecordings, recordedCall } from './helpers.js';

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** What a session middleware leaves on Express's request. */
type SessionRequest = express.Request & { session?: { businessId: string } };

describe('embedded in Express 5 and in a Node server', () => {
  let emulator: Emulator;
  let recgate: Recgate<SessionRequest>;
  const cleanups: Array<() => unknown> = [];
  const suite = { after: (fn: () => unknown) => cleanups.unshift(fn) };

  before(async () => {
    emulator = await emulatorFor(suite);
    recgate = await createRecgate<SessionRequest>(
      optionsFor(suite, emulator, {
        prefix: '/recordings',
        authenticate: (req) => req.session?.businessId ?? null,
      }),
    );
    cleanups.unshift(() => recgate.close());
  });
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it("plays recordings through Express's middleware chain, with the host's session", async () => {
    const app = express();
    // The host's session middleware (a header stands in for its cookie store).
    app.use((req: SessionRequest, _res, next) => {
      const who = req.get('x-test-session');
      if (who !== undefined) req.session = { businessId: who };
      next();
    });
    app.use(recgate.middleware);
    app.get('/hello', (_req, res) => {
      res.json({ hello: 'express' });
    });
    const server = createServer(app);
    const base = await listen(server);
    cleanups.unshift(() => new Promise((r) => server.close(r)));
    await playsRecordings({
      base,
      prefix: '/recordings',
      emulator,
      recgate,
      as: (businessId) => ({ 'x-test-session': businessId }),
    });
    // Paths recgate does not own reach the host's routes and its own 404.
    assert.deepEqual(JSON.parse((await get(`${base}/hello`)).body.toString()), { hello: 'express' });
    const foreign = await get(`${base}/recordings/not-ours`);
    assert.equal(foreign.status, 404);
    assert.match(foreign.body.toString(), /Cannot GET/);
    // A path recgate owns, under another method: its 405 with Allow, not Express's 404.
    const wrongMethod = await get(`${base}/recordings/api/calls`, { method: 'DELETE' });
    assert.equal(wrongMethod.status, 405);
    assert.equal(codeOf(wrongMethod), 'RECGATE_METHOD_NOT_ALLOWED');
    assert.equal(wrongMethod.headers.allow, 'GET, HEAD');
  });

  it('is found at its prefix when Express mounts it under a path, after a body parser', async () => {
    const app = express();
    app.use(express.json());
    app.use((req: SessionRequest, _res, next) => {
      req.session = { businessId: 'biz-a' };
      next();
    });
    app.use('/recordings', recgate.middleware);
    const server = createServer(app);
    const base = await listen(server);
    cleanups.unshift(() => new Promise((r) => server.close(r)));
    const call = await recordedCall(emulator, recgate, 'biz-a', 3000);
    const played = await get(`${base}/recordings/api/calls/${call.callSid}/download`);
    assert.equal(played.status, 200);
    assert.equal(sha256(played.body), call.sha256);
    // express.json() read this body before recgate saw the request; the playback URL is issued all the same.
    const issued = await request(`${base}/recordings/api/calls/${call.callSid}/playback-url`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"ignored": true}',
    });
    assert.equal(issued.statusCode, 200);
    assert.match(((await issued.body.json()) as { url: string }).url, /\/recordings\/api\/calls\/CA/);
  });

  it('streams a cold recording through the middleware while Twilio is still sending it', async () => {
    const app = express();
    app.use((req: SessionRequest, _res, next) => {
      req.session = { businessId: 'biz-a' };
      next();
    });
    app.use(recgate.middleware);
    const server = createServer(app);
    const base = await listen(server);
    cleanups.unshift(() => new Promise((r) => server.close(r)));
    const call = await recordedCall(emulator, recgate, 'biz-a', 8000);
    // Twilio sends the first 4000 bytes, then nothing more for as long as this test runs.
    const fault = await fetch(`${emulator.url}/__emulator/faults`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'stall', after_bytes: 4000 }),
    });
    assert.equal(fault.status, 201);
    const res = await request(`${base}/recordings/api/calls/${call.callSid}/download`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(call.size));
    // A response buffered until the download ends would never give a byte here.
    let received = 0;
    for await (const chunk of res.body) {
      received += (chunk as Buffer).length;
      if (received > 0) break;
    }
    assert.ok(received > 0 && received <= 4000, `${received} bytes arrived while the upstream is stalled`);
  });

  it('serves a plain Node server as its whole handler: bearer JWTs by default, 404 and 405 of its own', async () => {
    const plain = await createRecgate(optionsFor(suite, emulator, { prefix: '/recordings' }));
    cleanups.unshift(() => plain.close());
    const server = createServer(plain.handler);
    const base = await listen(server);
    cleanups.unshift(() => new Promise((r) => server.close(r)));
    const call = await recordedCall(emulator, plain, 'biz-a', 3000);
    const download = `${base}/recordings/api/calls/${call.callSid}/download`;
    const bearer = { authorization: `Bearer ${await new JwtAuth(JWT_SECRET).sign('biz-a', 600)}` };
    const range = await get(download, { headers: { ...bearer, range: 'bytes=0-99' } });
    assert.equal(range.status, 206);
    assert.equal(range.body.length, 100);
    assert.equal((await get(download, { headers: { 'x-test-session': 'biz-a' } })).status, 401);
    const missing = await get(`${base}/elsewhere`);
    assert.equal(missing.status, 404);
    assert.equal(codeOf(missing), 'RECGATE_ROUTE_NOT_FOUND');
    const wrongMethod = await get(download, { method: 'POST', headers: bearer });
    assert.equal(wrongMethod.status, 405);
    assert.equal(codeOf(wrongMethod), 'RECGATE_METHOD_NOT_ALLOWED');
    const whole = await get(download, { headers: bearer });
    assert.equal(sha256(whole.body), call.sha256);
  });
});
