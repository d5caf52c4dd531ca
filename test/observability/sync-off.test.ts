/**
 * A gateway says when the process's sync guard turns synchronous file-system calls off (io/sync-guard.ts): the
 * warning `sync_io_off` and `recgate_sync_io_off_total{guard}`. A file of its own: the guard is the process's,
 * and it stays off for 10 s.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { metadataSync, SYNC_BACKOFF_MS, SyncGuard } from '../../src/io/sync-guard.js';
import { captureLogs } from '../helpers/log-capture.js';
import { metric } from '../helpers/metrics.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { syncCallsOff } from '../recordings/helpers.js';

let stack: Stack;
const { logger, lines } = captureLogs({ level: 'info' });

before(async () => {
  stack = await startStack({ logger });
});
after(() => stack?.close());

it('logs one warning and counts one turn-off when slow calls turn synchronous calls off', async () => {
  const sample = 'recgate_sync_io_off_total{guard="metadata"}';
  const before = await metric(stack, sample);
  assert.equal(metadataSync.on, true);
  syncCallsOff();
  assert.equal(await metric(stack, sample), before + 1);
  const warnings = lines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.event === 'sync_io_off');
  assert.equal(warnings.length, 1, lines.join('\n'));
  assert.equal(warnings[0]!.guard, 'metadata');
  assert.equal(warnings[0]!.offMs, SYNC_BACKOFF_MS);
  assert.ok(Number(warnings[0]!.tookMs) > 1, `tookMs ${warnings[0]!.tookMs}`);
  assert.equal(warnings[0]!.level, 40, 'a warning');
});

it('a closed gateway says nothing more', async () => {
  await stack.close();
  const count = lines.length;
  // The process's guard is off already; another one tells the same listeners when it turns off.
  let now = 0;
  const guard = new SyncGuard(() => now, 'reads');
  for (let i = 0; i < 3; i++) guard.time(() => (now += 5));
  assert.equal(guard.on, false);
  assert.equal(lines.length, count);
});
