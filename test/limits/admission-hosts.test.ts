/**
 * The cross-host cap end to end: two gateways (two hosts) on one PostgreSQL database and one shared
 * recordings directory, each allowed 3 downloads, together allowed 2 by `--upstream-concurrency-global`.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config/config.js';
import { startGateway } from '../../src/server.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { JWT_SECRET, startStack } from '../helpers/stack.js';
import { coldCall, download } from './admission-helpers.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;

if (url === undefined) {
  it('cross-host admission', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
} else {
  it('two gateways on one database never run more downloads together than the global cap', async (t) => {
    const schema = `recgate_admission_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(async () => {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    });
    const databaseUrl = `${url}?schema=${schema}`;
    const shared = {
      databaseUrl,
      upstreamConcurrency: 3,
      upstreamConcurrencyGlobal: 2,
      coldDownloadRate: 0,
    };
    const stack = await startStack({ config: shared });
    t.after(() => stack.close());
    const second = await startGateway(
      loadConfig(
        {
          ...shared,
          port: 0,
          dataDir: stack.dataDir,
          jwtSecret: JWT_SECRET,
          twilioApiBase: stack.emulator.url,
          twilioAccountSid: stack.emulator.accountSid,
          twilioAuthToken: stack.emulator.authToken,
          logLevel: 'silent',
        },
        {},
      ),
    );
    t.after(() => second.close());
    stack.emulator.setThrottle({ ttfbMs: 150 });
    const token = await stack.token('biz-a');
    const calls = [];
    for (let i = 0; i < 10; i++) calls.push(await coldCall(stack, i % 2 ? 'biz-a' : 'biz-b'));
    const tokens = { 'biz-a': token, 'biz-b': await stack.token('biz-b') };
    const answers = await Promise.all(
      calls.map((call, i) =>
        download(
          i % 2 ? stack : { ...stack, url: second.url },
          i % 2 ? tokens['biz-a'] : tokens['biz-b'],
          call.callSid,
        ),
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      calls.map(() => 200),
    );
    const stats = stack.emulator.stats();
    t.diagnostic(
      `${stats.total_media_requests} media GETs, at most ${stats.max_concurrent_media_requests} at once`,
    );
    assert.equal(stats.total_media_requests, 10);
    assert.equal(stats.max_concurrent_media_requests, 2);
  });
}
