import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RESTART_DEFAULTS, RestartPolicy } from '../../src/cli/restart-policy.js';

describe('RestartPolicy', () => {
  it('defaults: 100 ms doubling, capped at 5 s, giving up at the 6th exit of a slot within 60 s', () => {
    assert.deepEqual(RESTART_DEFAULTS, {
      restartDelayMs: 100,
      maxRestartDelayMs: 5000,
      maxCrashes: 6,
      crashWindowMs: 60_000,
    });
    const policy = new RestartPolicy();
    const decisions = [0, 1, 2, 3, 4, 5].map((i) => policy.onExit(1, i * 1000));
    assert.deepEqual(decisions, [
      { restart: true, delayMs: 100, exits: 1 },
      { restart: true, delayMs: 200, exits: 2 },
      { restart: true, delayMs: 400, exits: 3 },
      { restart: true, delayMs: 800, exits: 4 },
      { restart: true, delayMs: 1600, exits: 5 },
      { restart: false, exits: 6 },
    ]);
  });

  it('caps the delay', () => {
    const policy = new RestartPolicy({ restartDelayMs: 1000, maxRestartDelayMs: 3000, maxCrashes: 10 });
    const delays = [0, 1, 2, 3, 4].map((i) => policy.onExit(1, i));
    assert.deepEqual(
      delays.map((d) => (d.restart ? d.delayMs : -1)),
      [1000, 2000, 3000, 3000, 3000],
    );
  });

  it('forgets exits older than the window: an occasional crash restarts quickly forever', () => {
    const policy = new RestartPolicy({ maxCrashes: 3, crashWindowMs: 10_000 });
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(policy.onExit(1, i * 10_001), { restart: true, delayMs: 100, exits: 1 });
    }
    // Two exits 9 s apart are in one window; the third, 11 s after the first, is not with it.
    const burst = new RestartPolicy({ maxCrashes: 3, crashWindowMs: 10_000 });
    assert.equal(burst.onExit(1, 0).exits, 1);
    assert.equal(burst.onExit(1, 9000).exits, 2);
    assert.deepEqual(burst.onExit(1, 11_000), { restart: true, delayMs: 200, exits: 2 });
    assert.deepEqual(burst.onExit(1, 12_000), { restart: false, exits: 3 });
  });

  it('counts each worker slot apart: all workers dying at once is one exit each', () => {
    const policy = new RestartPolicy({ maxCrashes: 2 });
    for (const slot of [1, 2, 3, 4]) {
      assert.deepEqual(policy.onExit(slot, 0), { restart: true, delayMs: 100, exits: 1 });
    }
    assert.deepEqual(policy.onExit(3, 500), { restart: false, exits: 2 });
  });

  it('names a bad option', () => {
    assert.throws(
      () => new RestartPolicy({ restartDelayMs: -1 }),
      /options\.restartDelayMs must be an integer >= 0/,
    );
    assert.throws(() => new RestartPolicy({ maxCrashes: 0 }), /options\.maxCrashes must be an integer >= 1/);
    assert.throws(
      () => new RestartPolicy({ crashWindowMs: 1.5 }),
      /options\.crashWindowMs must be an integer >= 1/,
    );
    assert.throws(
      () => new RestartPolicy({ restartDelayMs: 500, maxRestartDelayMs: 100 }),
      /options\.maxRestartDelayMs must be an integer >= 500/,
    );
  });
});
