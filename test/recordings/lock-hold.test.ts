/**
 * The heartbeat both lock backends share (src/recordings/lock/hold.ts): when it checks, and what a failed check
 * does. The backends' own tests (lock-contract.ts) cover the checks themselves.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Hold } from '../../src/recordings/lock/hold.js';
import { until } from '../helpers/common.js';

/** A hold whose checks are counted, and fail once `broken` is set. */
function countedHold(options: { heartbeatMs: number; whileWatched?: boolean }) {
  const state = { checks: 0, broken: false, dropped: 0 };
  const hold = new Hold({
    token: 't',
    heartbeatMs: options.heartbeatMs,
    ...(options.whileWatched === undefined ? {} : { whileWatched: options.whileWatched }),
    check: async () => {
      state.checks++;
      if (state.broken) throw new Error('the lock file was replaced');
    },
    drop: () => {
      state.dropped++;
    },
  });
  return { hold, state };
}

describe('lock hold heartbeat', () => {
  it('beats from the acquisition by default', async (t) => {
    const { hold, state } = countedHold({ heartbeatMs: 20 });
    t.after(() => hold.end());
    await until('two beats', () => state.checks >= 2, 5000);
  });

  it('whileWatched: no check until lost is read; then one at once for a hold older than a beat, then every beat', async (t) => {
    const { hold, state } = countedHold({ heartbeatMs: 20, whileWatched: true });
    t.after(() => hold.end());
    await sleep(120);
    assert.equal(state.checks, 0, 'a hold nobody watches is not checked');
    const lost = hold.lost;
    await until('the first check', () => state.checks >= 1, 5000);
    await until('the next beats', () => state.checks >= 3, 5000);
    assert.equal(lost.aborted, false);
    state.broken = true;
    await until('lost to abort', () => lost.aborted, 5000);
    assert.equal((lost.reason as { code?: string }).code, 'RECGATE_LOCK_LOST');
    assert.equal(state.dropped, 1);
    const after = state.checks;
    await sleep(60);
    assert.equal(state.checks, after, 'a lost hold beats no more');
  });

  it('whileWatched: a fresh hold read at once waits a whole beat for its first check', async (t) => {
    const { hold, state } = countedHold({ heartbeatMs: 600_000, whileWatched: true });
    t.after(() => hold.end());
    assert.equal(hold.lost.aborted, false);
    await sleep(50);
    assert.equal(state.checks, 0, 'the acquisition was the last check');
    // verify() is a check of its own, whether or not anyone watches.
    await hold.verify();
    assert.equal(state.checks, 1);
  });

  it('end() stops the heartbeat of a watched hold without aborting lost', async () => {
    const { hold, state } = countedHold({ heartbeatMs: 10, whileWatched: true });
    const lost = hold.lost;
    await until('a beat', () => state.checks >= 1, 5000);
    await hold.end();
    const after = state.checks;
    await sleep(50);
    assert.equal(state.checks, after);
    assert.equal(lost.aborted, false);
    await assert.rejects(hold.verify(), (err: { code?: string }) => err.code === 'RECGATE_LOCK_LOST');
  });
});
