/** The admission and cold-download options: defaults, environment variables, and what is refused. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ConfigError, loadConfig, upstreamQueueTimeoutMs } from '../../src/config/config.js';

const base = { jwtSecret: 'x'.repeat(32), dataDir: '/tmp/recgate-config-test' };

it('defaults: 16 downloads per process, 1000 queued, 30 s wait, 10 new downloads/s per business, 16 cold HEADs', () => {
  const config = loadConfig(base, {});
  assert.equal(config.upstreamConcurrency, 16);
  assert.equal(config.upstreamConcurrencyGlobal, undefined);
  assert.equal(config.upstreamQueueMax, 1000);
  assert.equal(upstreamQueueTimeoutMs(config), 30_000);
  assert.equal(config.coldDownloadRate, 10);
  assert.equal(config.coldDownloadBurst, 100);
  assert.equal(config.coldHeadConcurrency, 16);
  // A short lock timeout shortens the default queue wait below it.
  assert.equal(upstreamQueueTimeoutMs(loadConfig({ ...base, lockTimeoutMs: 10_000 }, {})), 5000);
});

it('reads the environment variables; flags win', () => {
  const env = {
    RECGATE_UPSTREAM_CONCURRENCY: '4',
    RECGATE_UPSTREAM_CONCURRENCY_GLOBAL: '8',
    RECGATE_DATABASE_URL: 'postgres://127.0.0.1/test',
    RECGATE_UPSTREAM_QUEUE_MAX: '0',
    RECGATE_UPSTREAM_QUEUE_TIMEOUT_MS: '2000',
    RECGATE_COLD_DOWNLOAD_RATE: '0.5',
    RECGATE_COLD_DOWNLOAD_BURST: '3',
    RECGATE_COLD_HEAD_CONCURRENCY: '4',
  };
  const config = loadConfig({ ...base, upstreamConcurrency: 6 }, env);
  assert.equal(config.upstreamConcurrency, 6);
  assert.equal(config.upstreamConcurrencyGlobal, 8);
  assert.equal(config.upstreamQueueMax, 0);
  assert.equal(upstreamQueueTimeoutMs(config), 2000);
  assert.equal(config.coldDownloadRate, 0.5);
  assert.equal(config.coldDownloadBurst, 3);
  assert.equal(config.coldHeadConcurrency, 4);
  assert.equal(loadConfig({ ...base, coldHeadConcurrency: 2 }, env).coldHeadConcurrency, 2);
});

it('refuses a global cap without PostgreSQL, a queue wait not below the lock timeout, and bad numbers', () => {
  const refused = (input: Record<string, unknown>, field: RegExp) =>
    assert.throws(
      () => loadConfig({ ...base, ...input }, {}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, field);
        return true;
      },
    );
  refused({ upstreamConcurrencyGlobal: 4 }, /upstream-concurrency-global needs a postgres/);
  refused({ upstreamQueueTimeoutMs: 120_000 }, /upstream-queue-timeout-ms must be below lock-timeout-ms/);
  refused({ upstreamConcurrency: 0 }, /upstream-concurrency must be positive/);
  refused({ upstreamQueueMax: -1 }, /upstream-queue-max must be 0 or more/);
  refused({ coldDownloadRate: -1 }, /cold-download-rate must be 0 or more/);
  refused({ coldDownloadBurst: 0 }, /cold-download-burst must be positive/);
  refused({ coldHeadConcurrency: 0 }, /cold-head-concurrency must be positive/);
  refused({ coldHeadConcurrency: 'many' }, /cold-head-concurrency must be a number/);
});
