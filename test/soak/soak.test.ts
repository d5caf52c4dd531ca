/**
 * `npm run soak` for 5 seconds: recgate serve --workers 2 (from source) under the whole mix of request kinds
 * against the throttled emulator, every response checked. Nothing here asserts speed; it asserts that the
 * soak passed, that every kind ran, and that the figures add up.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderSoak } from '../../soak/report.js';
import { KINDS, type Kind } from '../../soak/requests.js';
import { REACHES_CACHE, runSoak, WARM_RECORDINGS } from '../../soak/soak.js';
import { HARNESS_ENTRY } from '../helpers/recgate-command.js';

test('soak: 5 s of mixed load on two workers, every response as planned', { timeout: 120_000 }, async (t) => {
  const report = await runSoak({
    durationS: 5,
    concurrency: 8,
    seed: 1,
    workers: 2,
    entry: HARNESS_ENTRY,
  });
  t.diagnostic(renderSoak(report));
  assert.deepEqual(report.failures, []);
  assert.equal(report.passed, true);
  assert.equal(report.failedRequests, 0);
  assert.deepEqual(
    report.kinds.map((k) => k.kind),
    [...KINDS],
  );
  for (const k of report.kinds) {
    assert.ok(k.requests > 0, `${k.kind} ran`);
    assert.equal(k.failed, 0, `${k.kind} failed`);
    assert.equal(k.ttfbMs.count, k.requests, `${k.kind} latencies`);
    assert.equal(k.ttfbJoinedMs.count + k.ttfbFetchedMs.count, k.ttfbMs.count);
    if (!REACHES_CACHE.has(k.kind as Kind)) assert.equal(k.joined, 0, `${k.kind} never joins a download`);
  }
  assert.equal(
    report.total.requests,
    report.kinds.reduce((sum, k) => sum + k.requests, 0),
  );
  assert.equal(report.workerPids.before.length, 2);
  assert.deepEqual(report.workerPids.after, report.workerPids.before);
  const misses = report.kinds.find((k) => k.kind === 'miss')!.requests;
  assert.equal(report.recordings.requested, WARM_RECORDINGS + misses);
  // Each requested recording fetched (at least) once; seek-ahead may add slices.
  assert.ok(report.upstream.mediaRequests >= report.recordings.requested);
});
