/**
 * An embedded recgate observes its requests as `recgate serve` does: an `x-request-id` on every answer (the
 * client's own when well formed), one `request completed` log line per request with the token stripped, and
 * the HTTP metrics; through the Fastify plugin, only for recgate's routes, not the host's, and the request
 * line is the host's own.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Fastify from 'fastify';
import type { Emulator } from '../../src/emulator/index.js';
import { createRecgate, type Recgate } from '../../src/index.js';
import { getMetrics } from '../../src/observability/metrics.js';
import { captureLogs } from '../helpers/log-capture.js';
import { emulatorFor, get, optionsFor, recordedCall } from './helpers.js';

const BUSINESS = 'biz-observed';

/** `recgate_http_requests_total` for `route` and `status`, as the registry has it now. */
async function requestsCounted(route: string, status: string): Promise<number> {
  const metric = await getMetrics().httpRequests.get();
  return metric.values
    .filter((v) => v.labels.route === route && v.labels.status === status)
    .reduce((sum, v) => sum + v.value, 0);
}

describe('an embedded recgate observes its requests', () => {
  let emulator: Emulator;
  let recgate: Recgate;
  const logs = captureLogs({ plain: true });
  const cleanups: Array<() => unknown> = [];
  const suite = { after: (fn: () => unknown) => cleanups.unshift(fn) };

  before(async () => {
    emulator = await emulatorFor(suite);
    recgate = await createRecgate(
      optionsFor(suite, emulator, {
        logger: logs.logger,
        authenticate: (req) => (req.headers['x-test-session'] === BUSINESS ? BUSINESS : null),
      }),
    );
    cleanups.unshift(() => recgate.close());
  });
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  const DOWNLOAD = '/api/calls/:callSid/download';

  it('through the Node handler: request ids, one log line per request, and the metrics', async () => {
    const server = createServer(recgate.handler);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.unshift(() => new Promise((r) => server.close(r)));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const call = await recordedCall(emulator, recgate, BUSINESS);
    const before200 = await requestsCounted(DOWNLOAD, '200');
    const given = await get(`${base}/api/calls/${call.callSid}/download?token=secret-in-url`, {
      headers: { 'x-test-session': BUSINESS, 'x-request-id': 'host-trace.42' },
    });
    assert.equal(given.status, 200);
    assert.equal(given.headers['x-request-id'], 'host-trace.42');
    const fresh = await get(`${base}/api/calls/${call.callSid}/download`, {
      headers: { 'x-test-session': BUSINESS, 'x-request-id': 'not a valid id!' },
    });
    assert.match(String(fresh.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(await requestsCounted(DOWNLOAD, '200'), before200 + 2);
    const line = logs.records.find((l) => l.msg === 'request completed' && l.reqId === 'host-trace.42');
    assert.ok(line, JSON.stringify(logs.records.filter((l) => l.msg === 'request completed')));
    const req = line.req as { method: string; url: string };
    assert.equal(req.method, 'GET');
    assert.ok(!req.url.includes('secret-in-url'), `the token stays out of the log: ${req.url}`);
    assert.equal((line.res as { statusCode: number }).statusCode, 200);
    assert.equal(typeof line.ms, 'number');
  });

  it("through the Fastify plugin: recgate's routes only, not the host's", async () => {
    // The host's logger: in its app, recgate's routes log through the host's request loggers.
    const host = Fastify({ loggerInstance: logs.logger });
    host.get('/hello', async () => ({ hello: 'host' }));
    await host.register(recgate.plugin, { prefix: '/recordings' });
    const base = await host.listen({ host: '127.0.0.1', port: 0 });
    cleanups.unshift(() => host.close());
    const call = await recordedCall(emulator, recgate, BUSINESS);
    const route = `/recordings${DOWNLOAD}`;
    const before200 = await requestsCounted(route, '200');
    const played = await get(`${base}/recordings/api/calls/${call.callSid}/download`, {
      headers: { 'x-test-session': BUSINESS },
    });
    assert.equal(played.status, 200);
    const id = played.headers['x-request-id'];
    assert.equal(typeof id, 'string');
    const completed = logs.records.filter((l) => l.msg === 'request completed' && l.reqId === id);
    assert.equal(completed.length, 1, "the host's line for the request, not a second one from recgate");
    assert.equal(await requestsCounted(route, '200'), before200 + 1);
    const hello = await get(`${base}/hello`);
    assert.equal(hello.headers['x-request-id'], undefined, "the host's route is the host's");
    assert.equal(await requestsCounted('/hello', '200'), 0);
  });
});
