import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  onSyncOff,
  runQueueWaitMs,
  SLOW_SYNC_MS,
  SYNC_BACKOFF_MS,
  SyncGuard,
  type SyncOff,
  surelyMissing,
} from '../../src/io/sync-guard.js';

describe('SyncGuard', () => {
  /**
   * A guard on a fake clock; `call(ms, waitedMs)` is a synchronous call that takes `ms`, of which the thread
   * spent `waitedMs` waiting for a CPU. `reads` counts the guard's looks at that wait.
   */
  function fake(name?: string, options: { waitKnown?: boolean } = {}) {
    let now = 1000;
    let waited = 50;
    let reads = 0;
    const guard = new SyncGuard(
      () => now,
      name,
      options.waitKnown === false
        ? undefined
        : () => {
            reads++;
            return waited;
          },
    );
    const call = (ms: number, waitedMs = 0) =>
      guard.time(() => {
        now += ms;
        waited += waitedMs;
        return ms;
      });
    return { guard, call, advance: (ms: number) => (now += ms), reads: () => reads };
  }

  it('stays on through fast calls and one slow call alone', () => {
    const { guard, call } = fake();
    for (let i = 0; i < 100; i++) assert.equal(call(0.01), 0.01);
    call(SLOW_SYNC_MS + 5);
    assert.equal(guard.on, true, 'a preempted call alone turns nothing off');
  });

  it('turns off after three slow calls close together, for the back-off, then on again', () => {
    const { guard, call, advance } = fake();
    call(5);
    call(5);
    assert.equal(guard.on, true);
    call(5);
    assert.equal(guard.on, false);
    advance(SYNC_BACKOFF_MS - 10);
    assert.equal(guard.on, false);
    advance(20);
    assert.equal(guard.on, true);
  });

  it('fast calls between slow ones fade them: three slow calls spread out turn nothing off', () => {
    const { guard, call } = fake();
    for (let round = 0; round < 5; round++) {
      call(5);
      for (let i = 0; i < 40; i++) call(0.01);
    }
    assert.equal(guard.on, true);
  });

  it('once a slow call counts, does not count a call slow only by its wait for a CPU', () => {
    const { guard, call, reads } = fake();
    for (let i = 0; i < 50; i++) call(0.01);
    assert.equal(reads(), 0, 'no look at the wait while no slow call counts');
    call(5, 4.5);
    assert.equal(reads(), 0, 'the first slow call counts: nothing was read before it');
    // Preempted for a scheduler slice each: the calls' own time is well under the threshold.
    for (let i = 0; i < 5; i++) call(4, 3.8);
    assert.equal(guard.on, true, 'preempted calls are not a slow disk');
    assert.equal(reads(), 10, 'before and after each call while the slow one counts');
    // A slow disk: the thread slept in the calls; it did not wait for a CPU.
    call(4, 0.5);
    call(4);
    assert.equal(guard.on, true);
    call(4);
    assert.equal(guard.on, false);
  });

  it('counts the whole time where the wait for a CPU is not known', () => {
    const { guard, call } = fake(undefined, { waitKnown: false });
    call(5, 4.5);
    call(5, 4.5);
    call(5, 4.5);
    assert.equal(guard.on, false);
  });

  it("reads the thread's wait for a CPU from Linux where it has schedstat", (t) => {
    const waited = runQueueWaitMs();
    if (process.platform !== 'linux') {
      assert.equal(waited, undefined);
      return;
    }
    if (waited === undefined) {
      t.skip('this kernel has no /proc/thread-self/schedstat');
      return;
    }
    assert.ok(Number.isFinite(waited) && waited >= 0, String(waited));
    const later = runQueueWaitMs();
    assert.ok(later !== undefined && later >= waited, 'it only grows');
  });

  it('books a call that throws, and passes its error on', () => {
    const { guard } = fake();
    let now = 0;
    const slow = new SyncGuard(() => now);
    for (let i = 0; i < 3; i++) {
      assert.throws(
        () =>
          slow.time(() => {
            now += 5;
            throw new Error('EIO');
          }),
        /EIO/,
      );
    }
    assert.equal(slow.on, false);
    assert.equal(guard.on, true);
  });

  it('tells every listener once when it turns off, with its name and the slow call; not when it stays on', (t) => {
    const heard: SyncOff[] = [];
    const unsubscribe = onSyncOff((event) => heard.push(event));
    t.after(unsubscribe);
    // A listener that throws neither stops the others nor fails the call that was timed.
    t.after(
      onSyncOff(() => {
        throw new Error('a broken listener');
      }),
    );
    const { guard, call } = fake('reads');
    call(5);
    call(5);
    assert.deepEqual(heard, []);
    assert.equal(call(7), 7);
    assert.equal(guard.on, false);
    assert.deepEqual(heard, [{ guard: 'reads', tookMs: 7, offMs: SYNC_BACKOFF_MS }]);
    unsubscribe();
    const other = fake();
    other.call(5);
    other.call(5);
    other.call(5);
    assert.equal(other.guard.on, false);
    assert.equal(heard.length, 1, 'an unsubscribed listener hears nothing');
  });
});

describe('surelyMissing', () => {
  it('is true only when nothing is at the path', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'recgate-missing-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'there'), 'x');
    assert.equal(surelyMissing(join(dir, 'there')), false);
    assert.equal(surelyMissing(join(dir, 'absent')), true);
    // Under a file, not a directory: ENOTDIR is an error the caller's own look reports as it should.
    assert.equal(surelyMissing(join(dir, 'there', 'below')), false);
  });
});
