/**
 * A tiny run of `npm run bench:cache` so it cannot rot: both backends, small sizes, every figure present,
 * and the passes removed exactly the real files (the least recently played rows). No speed is asserted.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import {
  type Backend,
  renderCacheBench,
  renderDirectoryBench,
  runCacheBench,
  runDirectoryBench,
} from '../../bench/cache.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { HARNESS_ENTRY } from '../helpers/recgate-command.js';

test('bench:cache smoke run on SQLite and PostgreSQL', async (t) => {
  const found = await findPostgres();
  const backends: Backend[] = ['sqlite'];
  if ('url' in found) backends.push('postgres');
  else postgresUnavailable(t, found.reason);
  const rows = await runCacheBench({
    sizes: [600, 1200],
    backends,
    postgresUrl: 'url' in found ? found.url : undefined,
  });
  assert.equal(rows.length, backends.length * 2);
  for (const row of rows) {
    for (const figure of [row.fillS, row.startupMs, row.passMs, row.stepMs, row.oldestMs]) {
      assert.ok(Number.isFinite(figure) && figure >= 0, `${row.backend} ${row.rows}: ${figure}`);
    }
    assert.equal(row.realFilesRemoved, 5, 'the least recently played files went first');
  }
  const table = renderCacheBench(rows);
  assert.match(table, /\| sqlite \| start-up \(ms\) \|/);
  assert.match(table, /\| 600 \| 1\.2k \|/);
});

test('bench:cache smoke run of the recgate serve start-up, on SQLite', async () => {
  const [row] = await runCacheBench({ sizes: [600], backends: ['sqlite'], serve: HARNESS_ENTRY });
  for (const figure of [row!.serveMs, row!.serveEmptyMs]) {
    assert.ok(typeof figure === 'number' && Number.isFinite(figure) && figure > 0, String(figure));
  }
  assert.match(
    renderCacheBench([row!]),
    /\| sqlite \| recgate serve start to ready, this data dir \(ms\) \| \d+ \|/,
  );
});

test('bench:cache directory smoke run: every figure present, nothing left behind', async () => {
  const before = readdirSync(tmpdir()).filter((n) => n.startsWith('recgate-bench-dir-')).length;
  const rows = await runDirectoryBench([40, 80]);
  assert.deepEqual(
    rows.map((r) => r.files),
    [40, 80],
  );
  for (const row of rows) {
    for (const figure of [row.fillS, row.evictMs, row.purgeMs, row.sweepMs]) {
      assert.ok(Number.isFinite(figure) && figure >= 0, `${row.files}: ${figure}`);
    }
  }
  assert.match(renderDirectoryBench(rows), /\| remove one, as an eviction \(ms, median\) \|/);
  assert.equal(readdirSync(tmpdir()).filter((n) => n.startsWith('recgate-bench-dir-')).length, before);
});
