/**
 * `recgate prefetch`, run from source beside a gateway on the same data dir: by call, business and date
 * range (the emulator's media counts say what was fetched), skips and failures with their reasons, exit
 * codes (0 done, 1 failed, 2 bad usage), `--no-run`, and the progress bar on a terminal.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runPrefetch } from '../../src/cli/prefetch.js';
import {
  commandEnv,
  deleteAtTwilio,
  mediaRequests,
  newCallSid,
  play,
  recgate,
  recordedCall,
} from '../helpers/admin-cli.js';
import { sha256 } from '../helpers/common.js';
import { settledFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';

describe('recgate prefetch', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack?.close());

  it('--call fetches the recording once; the next play is a hit', async () => {
    const call = await recordedCall(stack, 'acme');
    const run = await recgate(stack, ['prefetch', '--call', call.callSid]);
    assert.equal(run.code, 0, run.err);
    assert.equal(
      run.out,
      `done  ${call.recordingSid} (call ${call.callSid}, acme)\nqueued 1, done 1, failed 0, skipped 0\n`,
    );
    assert.equal(mediaRequests(stack, call.recordingSid), 1);
    const played = await play(stack, call.callSid, 'acme');
    assert.equal(sha256(played.bytes), call.sha256);
    assert.equal(mediaRequests(stack, call.recordingSid), 1, 'the play was a cache hit');
  });

  it('--business skips purged and deleted calls, saying so; a failed download exits 1 with its reason', async () => {
    const ok = await recordedCall(stack, 'globex');
    // A <Dial> pair: the child plays its parent's recording, so the two calls make one job.
    const parent = newCallSid();
    const child = newCallSid();
    const dialled = await stack.emulator.createRecording({ call_sid: parent, bytes: 7_000 });
    await stack.register({ businessId: 'globex', callSid: parent });
    await stack.register({ businessId: 'globex', callSid: child, parentCallSid: parent });
    const purged = await recordedCall(stack, 'globex');
    await stack.gateway.callLog.markPurged(purged.callSid, null);
    // Twilio's webhook said the recording was deleted.
    const deleted = await recordedCall(stack, 'globex');
    await deleteAtTwilio(stack, deleted.recordingSid);
    await stack.gateway.callLog.setResolution(deleted.callSid, {
      recordingState: 'deleted',
      recordingSid: deleted.recordingSid,
      recordingOwnerCallSid: deleted.callSid,
    });
    const never = await recordedCall(stack, 'globex');
    await deleteAtTwilio(stack, never.recordingSid);
    const run = await recgate(stack, ['prefetch', '--business', 'globex']);
    assert.equal(run.code, 0, run.err);
    const lines = run.out.trim().split('\n');
    assert.ok(lines.includes(`skip  ${purged.callSid}: purged`), run.out);
    assert.ok(lines.includes(`skip  ${deleted.callSid}: deleted at Twilio`), run.out);
    assert.ok(lines.includes(`skip  ${never.callSid}: no recording`), run.out);
    assert.ok(lines.includes(`done  ${ok.recordingSid} (call ${ok.callSid}, globex)`), run.out);
    assert.equal(
      lines.filter((l) => l === `done  ${dialled.recording_sid} (call ${parent}, globex)`).length,
      1,
      run.out,
    );
    assert.equal(lines.at(-1), 'queued 2, done 2, failed 0, skipped 3');
    assert.equal(mediaRequests(stack, String(dialled.recording_sid)), 1);
    assert.equal(mediaRequests(stack, purged.recordingSid), 0);

    // Resolved while it existed, deleted at Twilio since: the download fails, and says why.
    const gone = await recordedCall(stack, 'initech');
    await stack.gateway.callLog.setResolution(gone.callSid, {
      recordingState: 'available',
      recordingSid: gone.recordingSid,
      recordingOwnerCallSid: gone.callSid,
    });
    await deleteAtTwilio(stack, gone.recordingSid);
    const failed = await recgate(stack, ['prefetch', '--business', 'initech']);
    assert.equal(failed.code, 1, failed.err);
    const out = failed.out.trim().split('\n');
    assert.equal(out.at(-2), 'queued 1, done 0, failed 1, skipped 0');
    assert.match(
      out.at(-1)!,
      new RegExp(`^failed ${gone.recordingSid} \\(call ${gone.callSid}, initech\\): RECGATE_RECORDING_GONE`),
    );
  });

  it('--since/--until fetches exactly the recordings Twilio made in the range, of registered calls', async () => {
    const at = (iso: string) => ({ start_time: iso, bytes: 6_000 });
    const make = async (iso: string, business: string | null) => {
      const callSid = newCallSid();
      const rec = await stack.emulator.createRecording({ call_sid: callSid, ...at(iso) });
      if (business !== null) await stack.register({ businessId: business, callSid });
      return String(rec.recording_sid);
    };
    const early = await make('2002-06-09T23:59:59Z', 'acme');
    const first = await make('2002-06-10T00:00:00Z', 'acme');
    const second = await make('2002-06-11T18:30:00Z', 'globex');
    const unregistered = await make('2002-06-11T19:00:00Z', null);
    const late = await make('2002-06-12T00:00:00Z', 'acme');
    const run = await recgate(stack, ['prefetch', '--since', '2002-06-10', '--until', '2002-06-11']);
    assert.equal(run.code, 0, run.err);
    assert.equal(run.out.trim().split('\n').at(-1), 'queued 2, done 2, failed 0, skipped 0');
    assert.deepEqual(
      [early, first, second, unregistered, late].map((sid) => mediaRequests(stack, sid)),
      [0, 1, 1, 0, 0],
    );
  });

  it("--no-run only queues: the running gateway's prefetcher fetches it", async () => {
    const call = await recordedCall(stack, 'acme');
    const run = await recgate(stack, ['prefetch', '--call', call.callSid, '--no-run']);
    assert.equal(run.code, 0, run.err);
    assert.equal(run.out, "queued 1 for the gateways' prefetchers, skipped 0\n");
    const deadline = Date.now() + 15_000;
    while (mediaRequests(stack, call.recordingSid) === 0 && Date.now() < deadline) await sleep(50);
    assert.equal(mediaRequests(stack, call.recordingSid), 1, 'the gateway fetched the queued recording');
    await settledFiles(path.join(stack.dataDir, 'recordings'), call.callSid);
    assert.equal((await play(stack, call.callSid, 'acme')).status, 200);
    assert.equal(mediaRequests(stack, call.recordingSid), 1, 'the play was a hit');
  });

  it('draws a progress bar on a terminal instead of one line per job', async () => {
    const calls = [await recordedCall(stack, 'umbrella'), await recordedCall(stack, 'umbrella')];
    const out: string[] = [];
    const bar = new PassThrough();
    let drawn = '';
    bar.on('data', (chunk: Buffer) => {
      drawn += chunk.toString();
    });
    Object.assign(bar, { isTTY: true, columns: 100 });
    const code = await runPrefetch({
      selection: { kind: 'business', businessId: 'umbrella' },
      run: true,
      flags: { dataDir: stack.dataDir },
      io: {
        out: (line) => out.push(line),
        err: (line) => out.push(`err: ${line}`),
        isTTY: true,
        barStream: bar,
      },
      env: { ...commandEnv(stack), RECGATE_LOG_LEVEL: 'silent' },
    });
    assert.equal(code, 0, out.join('\n'));
    assert.deepEqual(out, ['queued 2, done 2, failed 0, skipped 0'], 'no per-job lines on a terminal');
    assert.match(drawn, /prefetch \[.*\] 2\/2 100%/);
    for (const call of calls) assert.equal(mediaRequests(stack, call.recordingSid), 1);
  });

  it('exits 2 for bad usage', async () => {
    for (const [args, message] of [
      [[], /give one of --call, --business or --since/],
      [['--call', newCallSid(), '--business', 'acme'], /give one of/],
      [['--business', 'acme', '--until', '2002-01-01'], /--until goes with --since/],
      [['--since', 'yesterday'], /--since must be a date/],
      [['--since', '2002-02-01', '--until', '2002-01-01'], /--until is before --since/],
    ] as const) {
      const run = await recgate(stack, ['prefetch', ...args]);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.err}`);
      assert.match(run.err, message);
    }
  });
});
