/**
 * A tiny run of `npm run bench:scale` so it cannot rot: both backends, a few thousand calls, every figure
 * present, the EXPLAIN checks passed (the run throws otherwise), and a second run served from the cache
 * without generating. No speed is asserted. Also checks the generator's arithmetic the bench relies on.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import pg from 'pg';
import {
  type Backend,
  businessOf,
  callAt,
  callsOf,
  peerShape,
  renderScaleBench,
  runScaleBench,
  type Shape,
} from '../../bench/scale.js';
import { tempDir } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';

test('the generated calls: every business counted, children in their parent business', () => {
  const shape: Shape = { calls: 2345, businesses: 7, bigShare: 0.1 };
  const counts = new Array<number>(shape.businesses).fill(0);
  for (let i = 0; i < shape.calls; i++) {
    const call = callAt(shape, i);
    counts[businessOf(shape, i).business]!++;
    if (call.parent !== null) {
      const parent = Number.parseInt(call.parent.slice(2), 16);
      assert.equal(callAt(shape, parent).businessId, call.businessId, `${call.callSid}'s parent`);
      assert.equal(call.owner, call.parent);
    } else assert.equal(call.owner, call.callSid);
  }
  assert.deepEqual(
    counts,
    counts.map((_, b) => callsOf(shape, b)),
  );
  assert.equal(counts[0], 234);
  assert.deepEqual(peerShape({ calls: 10_000_000, businesses: 10_000, bigShare: 0.01 }, 10_000), {
    calls: 10_000,
    businesses: 10,
    bigShare: 0.01,
  });
});

test('bench:scale smoke run on SQLite and PostgreSQL, then from the cache', async (t) => {
  const found = await findPostgres();
  const backends: Backend[] = ['sqlite'];
  if ('url' in found) backends.push('postgres');
  else postgresUnavailable(t, found.reason);
  const postgresUrl = 'url' in found ? found.url : undefined;
  const schemaPrefix = `recgate_scale_test_${process.pid}_${randomBytes(2).toString('hex')}`;
  t.after(async () => {
    if (postgresUrl === undefined) return;
    const admin = new pg.Client({ connectionString: postgresUrl });
    await admin.connect();
    const { rows } = await admin.query<{ nspname: string }>(
      'SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)',
      [schemaPrefix],
    );
    for (const { nspname } of rows) await admin.query(`DROP SCHEMA "${nspname}" CASCADE`);
    await admin.end();
  });
  const options = {
    calls: 3000,
    businesses: 10,
    bigShare: 0.1,
    peerCalls: 1000,
    lookups: 50,
    pages: 5,
    backends,
    postgresUrl,
    dataDir: tempDir(t),
    schemaPrefix,
  };
  const first = await runScaleBench(options);
  assert.ok(first.generatedS > 0, 'the first run generated the logs');
  // 2 lookup kinds + 2 businesses × 4 positions, per backend.
  assert.equal(first.rows.length, backends.length * 10);
  for (const row of first.rows) {
    for (const f of [row.main, row.small, ...(row.offset ? [row.offset] : [])]) {
      assert.ok(Number.isFinite(f.p50) && Number.isFinite(f.p99) && f.p99 >= f.p50, row.measure);
    }
    assert.equal(row.main.samples, row.kind === 'lookup' ? 50 : 5);
    assert.equal(row.offset !== undefined, row.kind === 'page', row.measure);
  }
  // Per business and log: the four page queries and the lookups (SQLite's getForBusiness reads by `get`).
  const queries: Record<string, number> = { sqlite: 5, postgres: 6 };
  for (const backend of backends)
    assert.equal(first.plans[backend]?.length, 2 * 2 * queries[backend]!, backend);
  const table = renderScaleBench(first);
  assert.match(table, /\| sqlite \| download lookup: own recording \| < 1 ms \|/);
  assert.match(table, /3,000 calls \/ 10 businesses/);

  const again = await runScaleBench({ ...options, lookups: 10, pages: 2 });
  assert.equal(again.generatedS, 0, 'the second run reused the generated logs');
});
