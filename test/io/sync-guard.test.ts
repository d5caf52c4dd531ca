import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  onSyncOff,
  SLOW_SYNC_MS,
  SYNC_BACKOFF_MS,
  SyncGuard,
  type SyncOff,
  surelyMissing,
} from '../../src/io/sync-guard.js';

describe('SyncGuard', () => {
  /** A guard on a fake clock; `call(ms)` is a synchronous call that takes `ms`. */
  function fake(name?: string) {
    let now = 1000;
    const guard = new SyncGuard(() => now, name);
    const call = (ms: number) =>
      guard.time(() => {
        now += ms;
        return ms;
      });
    return { guard, call, advance: (ms: number) => (now += ms) };
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
