/**
 * Fault: the whole gateway is killed (SIGKILL to the primary and every worker) in the middle of a download,
 * and started again on the same data dir (SQLite call log, kernel file locks: the defaults).
 *
 * Each repetition asks a few clients for a fresh, throttled recording, kills the gateway's whole process
 * group at a seeded point of the download (by media bytes the emulator has sent), starts it again, and asks
 * for the recording once more. The clients of the killed gateway get cut bodies (or complete, exact ones if
 * they finished in time), never a body that looks complete and is wrong; the restarted gateway resumes the
 * partial of the same boot with a Range request, serves the whole recording, and leaves only `{sid}.mp3` and
 * its identity record, with no lock held. The restarted gateway is the next repetition's victim, so a run
 * of N repetitions starts N + 1 gateways (process starts are what the time goes on); they alternate between
 * one process and `--workers 2` (a primary and two workers, all killed), so every other repetition kills a
 * cluster and the others restart into one.
 *
 *   npm run test:faults -- --only gateway-killed [--repeat 20] [--seed S]
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { FsLocker } from '../../src/recordings/lock/fs.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { between, faultRepeat, faultSeed, seededRandom } from './seed.js';
import {
  callEvents,
  callFiles,
  coldRecording,
  describePlan,
  eventSummary,
  fetchRecording,
  planClients,
  ready,
  settledFiles,
  tally,
  waitFor,
  wholeRecording,
} from './takeover-helpers.js';

/** Recording size and upstream pace: a download of about 2 s, so the kill lands mid-body. */
const SIZE = 1_000_000;
const BANDWIDTH = 500_000;
const CLIENTS = 4;

describe('fault: the whole gateway is killed mid-download and restarted', () => {
  let emulator: Emulator;
  let token: string;
  const dirs: string[] = [];
  const running: ServeProcess[] = [];
  const agent = new Agent({ connections: 64 });

  before(async () => {
    emulator = await startEmulator({ port: 0, ttfbMs: 50, bandwidth: BANDWIDTH });
    token = await new JwtAuth(JWT_SECRET).sign('acme', 3600);
  });
  after(async () => {
    await Promise.all(running.map((g) => g.stop()));
    await emulator?.close();
    await agent.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function start(dataDir: string, workers: number): Promise<ServeProcess> {
    const gateway = await startServeProcess({ workers, dataDir, emulator, processGroup: true });
    running.push(gateway);
    return gateway;
  }

  it('killed clients are cut, the restart resumes the download and leaves one good file', async (t) => {
    const seed = faultSeed();
    const repeat = faultRepeat(3);
    const random = seededRandom(seed, 'gateway-killed');
    /** Workers of the gateway killed in repetition `rep`; its restart runs with the other count. */
    const workersOf = (rep: number) => (rep % 2 === 0 ? 1 : 2);
    t.diagnostic(`seed ${seed}, ${repeat} repetitions, ${SIZE} bytes at ${BANDWIDTH} B/s`);
    const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-fault-killed-'));
    dirs.push(dataDir);
    const recordings = path.join(dataDir, 'recordings');
    let gateway = await start(dataDir, workersOf(0));
    const totals = { complete: 0, cut: 0 };

    for (let rep = 0; rep < repeat; rep++) {
      const rec = await coldRecording(emulator, gateway.url, SIZE);
      const killAt = between(random, Math.floor(SIZE * 0.1), Math.floor(SIZE * 0.85));
      const plans = planClients(random, SIZE, CLIENTS);
      emulator.reset();
      t.diagnostic(
        `#${rep} ${rec.callSid} on ${workersOf(rep)} worker(s): kill after ${killAt} media bytes; clients ${plans.map(describePlan).join(' ')}`,
      );
      const pending = plans.map((plan) =>
        fetchRecording(gateway.url, rec.callSid, token, plan, rec.source, agent),
      );
      await waitFor(`${killAt} media bytes`, () =>
        (emulator.stats().media_bytes[rec.recordingSid] ?? 0) >= killAt ? true : undefined,
      );
      const holder = callEvents(gateway.logs, rec.callSid).find((l) => l.event === 'cache_miss')?.pid;
      await gateway.killAll();
      const sentAtKill = emulator.stats().media_bytes[rec.recordingSid] ?? 0;
      const killed = await Promise.all(pending);
      const leftBehind = await callFiles(recordings, rec.callSid);

      gateway = await start(dataDir, workersOf(rep + 1));
      const afterPlans = [wholeRecording(SIZE), ...planClients(random, SIZE, 2)];
      const restarted = await Promise.all(
        afterPlans.map((plan) => fetchRecording(gateway.url, rec.callSid, token, plan, rec.source, agent)),
      );
      const files = await settledFiles(recordings, rec, { allowLockFile: true });
      const lock = new FsLocker({ dir: recordings }).newLock(rec.callSid);
      const free = await lock.tryLock();
      if (free) await lock.unlock();

      const events = callEvents(gateway.logs, rec.callSid);
      const stats = emulator.stats();
      const requests = stats.media_requests[rec.recordingSid] ?? 0;
      const bytes = stats.media_bytes[rec.recordingSid] ?? 0;
      const slices = events.filter(
        (l) => l.event === 'seek_ahead' || l.event === 'seek_ahead_discarded',
      ).length;
      const resumed = events.filter((l) => l.event === 'download_resumed');
      const counts = tally(killed);
      totals.complete += counts.complete;
      totals.cut += counts.cut;
      t.diagnostic(
        `#${rep} killed pid ${holder} and its group at ${sentAtKill} bytes sent; its clients: ${killed
          .map(
            (r) => `${describePlan(r.plan)} ${r.verdict} ${r.received} B${r.detail ? ` (${r.detail})` : ''}`,
          )
          .join('; ')}; left behind: ${leftBehind.join(' ')}`,
      );
      t.diagnostic(
        `#${rep} restarted with ${workersOf(rep + 1)} worker(s): clients ${restarted.map((r) => `${describePlan(r.plan)} ${r.verdict}`).join(', ')}; ` +
          `upstream ${requests} requests (${slices} slices), ${bytes} bytes; resumed at ${
            resumed.map((l) => l.offset).join(',') || '-'
          }; files ${files.join(' ')}; events ${eventSummary(events)}`,
      );

      for (const r of killed) {
        assert.ok(
          r.verdict === 'complete' || r.verdict === 'cut',
          `#${rep} killed gateway, ${describePlan(r.plan)}: ${r.verdict} (status ${r.status}): ${r.detail}`,
        );
      }
      for (const r of restarted) {
        assert.equal(
          r.verdict,
          'complete',
          `#${rep} restarted gateway, ${describePlan(r.plan)}: ${r.detail}`,
        );
      }
      assert.ok(await ready(gateway.url), 'the restarted gateway is ready');
      assert.ok(free, 'nobody holds the lock once the restarted gateway is done');
      assert.deepEqual(
        await callFiles(recordings, rec.callSid),
        [`.${rec.callSid}.mp3.id`, `${rec.callSid}.mp3`],
        'only the recording and its identity record remain',
      );
      assert.ok(
        resumed.some((l) => typeof l.offset === 'number' && l.offset > 0),
        'the restarted gateway resumed the killed download with Range',
      );
      assert.equal(
        events.filter((l) => l.event === 'recording_saved').length,
        1,
        'saved once after the restart',
      );
      // The killed exchange, the resumed one, and any seek-ahead slices.
      assert.ok(requests - slices <= 2, `${requests} upstream requests, ${slices} of them slices`);
    }
    t.diagnostic(
      `all repetitions: clients of killed gateways ${totals.complete} complete, ${totals.cut} cut`,
    );
  });
});
