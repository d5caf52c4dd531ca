/**
 * Fault: the PostgreSQL session holding a recording's download lock is killed mid-download (issue 9).
 *
 * Two `recgate serve` processes stand for two hosts: one data dir (the shared volume) and one PostgreSQL
 * (call log, advisory locks and the fencing table). Clients on both gateways ask for a fresh, throttled
 * recording at once; at a seeded point of the download (by media bytes the emulator has sent) the test finds
 * the backend holding the recording's advisory lock and ends it with pg_terminate_backend. The holder must
 * notice, stop writing, and the download must be finished by whoever takes the lock next, resuming with
 * Range. Every body is complete and exact, or cut (never complete and wrong); neither gateway crashes;
 * exactly one good file ends up on disk, with its identity record and no generation files beside it.
 *
 *   npm run test:faults -- --only lock-session [--repeat 20] [--seed S]
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Agent } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { advisoryKey } from '../../src/recordings/lock/postgres.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { between, faultRepeat, faultSeed, seededRandom } from './seed.js';
import {
  atMediaBytes,
  callEvents,
  coldRecording,
  describePlan,
  eventSummary,
  fetchRecording,
  mediaSent,
  planClients,
  ready,
  seekerPlan,
  settledRecording,
  tally,
  waitFor,
  wholeRecording,
} from './takeover-helpers.js';

/**
 * Recording size and upstream pace: a download of about 2.5 s. The kill comes after 10% to 70% of the size
 * was sent: the rest leaves room for the lag between the emulator sending and the test noticing (its event
 * loop also reads every client's body), so the kill lands mid-download.
 */
const SIZE = 3_000_000;
const BANDWIDTH = 1_200_000;
const CLIENTS_PER_GATEWAY = 8;

const found = await findPostgres();
const base = 'url' in found ? found.url : undefined;

/** The sessions holding the advisory lock of key $1 (advisoryKey(callSid)): backend pid, application name. */
const HOLDER_SQL = `
  SELECT l.pid, a.application_name AS app
    FROM pg_locks l JOIN pg_stat_activity a USING (pid)
   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
     AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
     AND l.objid = ($1::bigint & 4294967295)::oid`;

/** Ends the session holding the lock, in the same statement that finds it (no window for a handover). */
const TERMINATE_SQL = `SELECT pid, app, pg_terminate_backend(pid) AS ok FROM (${HOLDER_SQL}) AS holder`;

describe('fault: the PostgreSQL session holding a download lock is killed', () => {
  if (base === undefined) {
    it('needs PostgreSQL', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
    return;
  }
  const schema = `recgate_fault_lock_${process.pid}_${randomBytes(3).toString('hex')}`;
  const database = `${base}?schema=${schema}`;
  let emulator: Emulator;
  let dataDir: string;
  let admin: pg.Client;
  const gateways: ServeProcess[] = [];
  const agent = new Agent({ connections: 64 });

  before(async () => {
    emulator = await startEmulator({ port: 0, ttfbMs: 50, bandwidth: BANDWIDTH });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-fault-lock-'));
    admin = new pg.Client({ connectionString: base });
    await admin.connect();
    // The first start creates the schema and migrates; the second finds it ready.
    gateways.push(
      await startServeProcess({ workers: 1, dataDir, emulator, extraArgs: ['--database', database] }),
    );
    gateways.push(
      await startServeProcess({ workers: 1, dataDir, emulator, extraArgs: ['--database', database] }),
    );
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    await emulator?.close();
    await agent.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (admin) {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  });

  it('every body is exact or cut, the takeover finishes the download, one good file remains', async (t) => {
    const seed = faultSeed();
    const repeat = faultRepeat(5);
    const random = seededRandom(seed, 'lock-session');
    const token = await new JwtAuth(JWT_SECRET).sign('acme', 3600);
    t.diagnostic(`seed ${seed}, ${repeat} repetitions, ${SIZE} bytes at ${BANDWIDTH} B/s`);
    const totals = { complete: 0, cut: 0, upstream: [] as number[] };

    for (let rep = 0; rep < repeat; rep++) {
      const rec = await coldRecording(emulator, gateways[0]!.url, SIZE);
      const key = advisoryKey(rec.callSid);
      const killAt = between(random, Math.floor(SIZE * 0.1), Math.floor(SIZE * 0.7));
      const plans = planClients(random, SIZE, 2 * CLIENTS_PER_GATEWAY);
      // Two late clients (one per gateway) seek near the end once the download is under way.
      const seekAt = between(random, Math.floor(SIZE * 0.2), Math.floor(SIZE * 0.35));
      const seekers = [seekerPlan(random, SIZE), seekerPlan(random, SIZE)];
      const logStart = gateways.map((g) => g.logs.length);
      emulator.reset();
      t.diagnostic(
        `#${rep} ${rec.callSid}: kill the lock session after ${killAt} media bytes; clients ${plans
          .map((p, i) => `g${i % 2}:${describePlan(p)}`)
          .join(' ')}; after ${seekAt} bytes ${seekers.map((p, i) => `g${i}:${describePlan(p)}`).join(' ')}`,
      );

      const pending = plans.map((plan, i) =>
        fetchRecording(gateways[i % 2]!.url, rec.callSid, token, plan, rec.source, agent),
      );
      let holder: { pid: number; app: string } | undefined;
      let sentAtKill = 0;
      await atMediaBytes(emulator, rec.recordingSid, [
        {
          at: seekAt,
          run: () => {
            for (const [i, plan] of seekers.entries()) {
              pending.push(fetchRecording(gateways[i]!.url, rec.callSid, token, plan, rec.source, agent));
            }
          },
        },
        {
          at: killAt,
          run: async () => {
            const ended = await waitFor('a session holding the lock', async () => {
              const { rows } = await admin.query<{ pid: number; app: string; ok: boolean }>(TERMINATE_SQL, [
                key,
              ]);
              return rows[0];
            });
            assert.equal(ended.ok, true, `terminated backend ${ended.pid}`);
            holder = ended;
            sentAtKill = mediaSent(emulator, rec.recordingSid);
          },
        },
      ]);
      assert.equal(holder?.app, 'recgate-lock', 'the lock was held by a recgate lock session');

      const results = await Promise.all(pending);
      const counts = tally(results);
      // No crash: both gateways still run and are ready.
      const alive = await Promise.all(
        gateways.map(async (g) => g.child.exitCode === null && (await ready(g.url))),
      );
      // The takeover completes: one good file, its identity record, nothing else of the call; and both
      // gateways serve the whole recording.
      const files = await settledRecording(path.join(dataDir, 'recordings'), rec);
      const afterwards = await Promise.all(
        gateways.map((g) =>
          fetchRecording(g.url, rec.callSid, token, wholeRecording(SIZE), rec.source, agent),
        ),
      );
      const { rows: held } = await admin.query(HOLDER_SQL, [key]);

      const events = gateways.map((g, i) => callEvents(g.logs.slice(logStart[i]), rec.callSid));
      const all = events.flat();
      const starter = events.findIndex((e) => e.some((l) => l.event === 'cache_miss'));
      const lost = all.filter((l) => l.event === 'download_failed' && l.code === 'RECGATE_LOCK_LOST');
      const losers = new Set(lost.map((l) => events.findIndex((e) => e.includes(l))));
      const otherFailures = all.filter(
        (l) => l.event === 'download_failed' && l.code !== 'RECGATE_LOCK_LOST',
      );
      const resumed = all.filter((l) => l.event === 'download_resumed');
      const saved = all.filter((l) => l.event === 'recording_saved');
      const slices = all.filter((l) => l.event === 'seek_ahead' || l.event === 'seek_ahead_discarded').length;
      const retries = gateways
        .flatMap((g, i) => g.logs.slice(logStart[i]))
        .filter((l) => l.callSid === rec.callSid && l.event === 'download_retry').length;
      const stats = emulator.stats();
      const requests = stats.media_requests[rec.recordingSid] ?? 0;
      const bytes = stats.media_bytes[rec.recordingSid] ?? 0;
      totals.complete += counts.complete;
      totals.cut += counts.cut;
      totals.upstream.push(requests);
      t.diagnostic(
        `#${rep} lock held by g${starter} (backend ${holder!.pid}), killed at ${sentAtKill} bytes sent; ` +
          `lost by ${[...losers].map((i) => `g${i}`).join(',') || 'nobody'}, saved by ${
            saved.map((l) => `g${events.findIndex((e) => e.includes(l))}`).join(',') || 'nobody'
          }; ` +
          `clients ${counts.complete} complete, ${counts.cut} cut, ${counts.refused} refused, ${counts.wrong} wrong` +
          `${results
            .filter((r) => r.verdict !== 'complete')
            .map((r) => ` [${describePlan(r.plan)} ${r.verdict}: ${r.received} B, ${r.detail}]`)
            .join('')}; ` +
          `upstream ${requests} requests (${slices} slices, ${retries} retries), ${bytes} bytes; ` +
          `resumed at ${resumed.map((l) => l.offset).join(',') || '-'}; files ${files.names.join(' ')}`,
      );
      for (const [i, e] of events.entries()) t.diagnostic(`#${rep} g${i} events: ${eventSummary(e)}`);

      for (const r of results) {
        assert.ok(
          r.verdict === 'complete' || r.verdict === 'cut',
          `#${rep} ${describePlan(r.plan)}: ${r.verdict} (status ${r.status}, ${r.received} bytes): ${r.detail}`,
        );
      }
      assert.deepEqual(alive, [true, true], 'both gateways still run and are ready');
      assert.equal(files.problem, undefined, files.problem);
      for (const [i, r] of afterwards.entries()) {
        assert.equal(
          r.verdict,
          'complete',
          `gateway ${i} serves the whole recording afterwards: ${r.detail}`,
        );
      }
      assert.deepEqual(held, [], 'nobody holds the lock once the download is over');
      assert.ok(starter >= 0, 'a gateway started the download');
      assert.ok(lost.length >= 1, 'the holder noticed it lost the lock (download_failed RECGATE_LOCK_LOST)');
      assert.deepEqual(
        otherFailures.map((l) => l.code),
        [],
        'no download failed for any other reason',
      );
      assert.equal(saved.length, 1, 'the recording was saved exactly once');
      assert.ok(
        resumed.some((l) => typeof l.offset === 'number' && l.offset > 0),
        'the takeover resumed the download with Range from where the lost holder got to',
      );
      // One exchange to start with, one more per lost lock and per broken body, and the seek-ahead slices.
      assert.ok(
        requests - slices <= 1 + lost.length + retries,
        `${requests} upstream requests for ${lost.length} lost locks, ${retries} retries and ${slices} slices`,
      );
    }
    t.diagnostic(
      `all repetitions: ${totals.complete} complete, ${totals.cut} cut bodies; upstream requests per recording ${totals.upstream.join(',')}`,
    );
  });
});
