/** `--drain-delay` and `--shutdown-timeout`: the durations they accept, their defaults, and what they refuse. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig, parseDurationMs } from '../../src/config/config.js';

const input = { jwtSecret: 'drain-options-secret-'.padEnd(40, 'z'), dataDir: '/data' };

describe('drain options', () => {
  it('default to 5 s of drain delay and 30 s of shutdown timeout', () => {
    const config = loadConfig(input, {});
    assert.equal(config.drainDelayMs, 5000);
    assert.equal(config.shutdownTimeoutMs, 30_000);
  });

  it('read 500ms, 5s, 1m or bare seconds, from flags over the environment', () => {
    for (const [text, ms] of [
      ['500ms', 500],
      ['5s', 5000],
      ['1m', 60_000],
      ['2', 2000],
      ['0.25', 250],
      ['0', 0],
    ] as const) {
      assert.equal(parseDurationMs(text), ms, text);
      assert.equal(loadConfig({ ...input, drainDelayMs: text }, {}).drainDelayMs, ms);
    }
    const env = { RECGATE_DRAIN_DELAY: '2s', RECGATE_SHUTDOWN_TIMEOUT: '45s' };
    assert.deepEqual(
      (({ drainDelayMs, shutdownTimeoutMs }) => ({ drainDelayMs, shutdownTimeoutMs }))(
        loadConfig(input, env),
      ),
      { drainDelayMs: 2000, shutdownTimeoutMs: 45_000 },
    );
    assert.equal(loadConfig({ ...input, shutdownTimeoutMs: '10s' }, env).shutdownTimeoutMs, 10_000);
  });

  it('refuse anything else, naming the option', () => {
    for (const bad of ['-1', 'abc', '5 h', '1m30s', '2h']) {
      assert.throws(() => loadConfig({ ...input, drainDelayMs: bad }, {}), /drain-delay/, bad);
    }
    assert.throws(
      () => loadConfig(input, { RECGATE_SHUTDOWN_TIMEOUT: 'soon' }),
      /shutdown-timeout must look like 500ms, 5s, 2m or a number of seconds/,
    );
  });
});
