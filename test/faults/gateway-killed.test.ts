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
import { FsLocker, SEEK_AHEAD_DEFAULTS } from '../../src/recordings/index.js';
import { callFiles } from '../helpers/recordings.js';
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
  wholeRecording,
} from './takeover-helpers.js';

/**
 * Recording size and upstream pace: a download of about 2.5 s. The kill comes after 10% to 70% of the size
 * was sent: the rest leaves room for the lag between the emulator sending and the test noticing (its event
 * loop also reads every client's body), so the kill lands mid-download.
 */
const SIZE = 3_000_000;
const BANDWIDTH = 1_200_000;
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
      const killAt = between(random, Math.floor(SIZE * 0.1), Math.floor(SIZE * 0.7));
      const plans = planClients(random, SIZE, CLIENTS);
      // A late client seeks near the end once the download is under way (a seek-ahead slice, maybe); not
      // when the kill comes first: it would only find the port closed.
      const seekAt = between(random, Math.floor(SIZE * 0.2), Math.floor(SIZE * 0.35));
      const seeker = seekerPlan(random, SIZE);
      emulator.reset();
      t.diagnostic(
        `#${rep} ${rec.callSid} on ${workersOf(rep)} worker(s): kill after ${killAt} media bytes; clients ${plans
          .map(describePlan)
          .join(' ')}; after ${seekAt} bytes ${seekAt < killAt ? describePlan(seeker) : 'none'}`,
      );
      const victim = gateway;
      const pending = plans.map((plan) =>
        fetchRecording(victim.url, rec.callSid, token, plan, rec.source, agent),
      );
      let sentAtKill = 0;
      const seek = {
        at: seekAt,
        run: () => {
          pending.push(fetchRecording(victim.url, rec.callSid, token, seeker, rec.source, agent));
        },
      };
      await atMediaBytes(emulator, rec.recordingSid, [
        ...(seekAt < killAt ? [seek] : []),
        {
          at: killAt,
          run: async () => {
            await victim.killAll();
            sentAtKill = mediaSent(emulator, rec.recordingSid);
          },
        },
      ]);
      const holder = callEvents(victim.logs, rec.callSid).find((l) => l.event === 'cache_miss')?.pid;
      const killed = await Promise.all(pending);
      const leftBehind = await callFiles(recordings, rec.callSid);

      gateway = await start(dataDir, workersOf(rep + 1));
      const afterPlans = [wholeRecording(SIZE), ...planClients(random, SIZE, 2)];
      const restarted = await Promise.all(
        afterPlans.map((plan) => fetchRecording(gateway.url, rec.callSid, token, plan, rec.source, agent)),
      );
      const files = await settledRecording(recordings, rec, { allowLockFile: true });
      // The holder lets go of the lock just after its rename and clean-up, which the settled files may beat.
      const lock = new FsLocker({ dir: recordings }).newLock(rec.callSid);
      let free = await lock.tryLock();
      for (let i = 0; !free && i < 100; i++) {
        await new Promise((r) => setTimeout(r, 50));
        free = await lock.tryLock();
      }
      if (free) await lock.unlock();

      const events = callEvents(gateway.logs, rec.callSid);
      const stats = emulator.stats();
      const requests = stats.media_requests[rec.recordingSid] ?? 0;
      const bytes = stats.media_bytes[rec.recordingSid] ?? 0;
      const slices = [...callEvents(victim.logs, rec.callSid), ...events].filter(
        (l) => l.event === 'seek_ahead' || l.event === 'seek_ahead_discarded',
      ).length;
      const resumed = events.filter((l) => l.event === 'download_resumed');
      const counts = tally(killed);
      totals.complete += counts.complete;
      totals.cut += counts.cut;
      t.diagnostic(
        `#${rep} killed the gateway (the download ran in pid ${holder}) and its group at ${sentAtKill} bytes sent; its clients: ${killed
          .map(
            (r) => `${describePlan(r.plan)} ${r.verdict} ${r.received} B${r.detail ? ` (${r.detail})` : ''}`,
          )
          .join('; ')}; left behind: ${leftBehind.join(' ')}`,
      );
      t.diagnostic(
        `#${rep} restarted with ${workersOf(rep + 1)} worker(s): clients ${restarted.map((r) => `${describePlan(r.plan)} ${r.verdict}`).join(', ')}; ` +
          `upstream ${requests} requests (${slices} slices), ${bytes} bytes; resumed at ${
            resumed.map((l) => l.offset).join(',') || '-'
          }; files ${files.names.join(' ')}; events ${eventSummary(events)}`,
      );

      for (const r of killed) {
        assert.ok(
          r.verdict === 'complete' || r.verdict === 'cut',
          `#${rep} killed gateway, ${describePlan(r.plan)}: ${r.verdict} (status ${r.status}): ${r.detail}`,
        );
      }
      assert.equal(files.problem, undefined, files.problem);
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
      // The killed exchange, the resumed one, the slices logged, and those the killed gateway had in flight
      // (a slice logs when it ends).
      assert.ok(
        requests <= 2 + slices + SEEK_AHEAD_DEFAULTS.maxConcurrentPerRecording,
        `${requests} upstream requests, ${slices} slices logged`,
      );
    }
    t.diagnostic(
      `all repetitions: clients of killed gateways ${totals.complete} complete, ${totals.cut} cut`,
    );
  });
});
