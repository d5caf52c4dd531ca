/**
 * `recgate prefetch`, run in a child process beside a gateway on the same data dir: by call, business and date
 * range (the emulator's media counts say what was fetched), skips and failures with their reasons, exit
 * codes (0 done, 1 failed, 2 bad usage), `--no-run`, and the progress bar when stderr is a terminal.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { processIo } from '../../src/cli/admin.js';
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

  it('draws the progress bar when stderr, where it draws, is a terminal, whatever stdout is', async () => {
    /** A stream that keeps what is written to it, a terminal's when `tty`. */
    const stream = (tty: boolean) => {
      const s = Object.assign(new PassThrough(), { isTTY: tty, columns: 100, text: '' });
      s.on('data', (chunk: Buffer) => {
        s.text += chunk.toString();
      });
      return s;
    };
    const run = (stdout: ReturnType<typeof stream>, stderr: ReturnType<typeof stream>) =>
      runPrefetch({
        selection: { kind: 'business', businessId: 'umbrella' },
        run: true,
        flags: { dataDir: stack.dataDir },
        io: processIo({ stdout, stderr }),
        env: { ...commandEnv(stack), RECGATE_LOG_LEVEL: 'silent' },
      });

    // `recgate prefetch > report.txt` in a terminal: the bar on stderr, only the summary in the file.
    const calls = [await recordedCall(stack, 'umbrella'), await recordedCall(stack, 'umbrella')];
    const [toFile, terminal] = [stream(false), stream(true)];
    assert.equal(await run(toFile, terminal), 0, toFile.text + terminal.text);
    assert.equal(toFile.text, 'queued 2, done 2, failed 0, skipped 0\n', 'no per-job lines');
    assert.match(terminal.text, /prefetch \[.*\] 2\/2 100%/);
    for (const call of calls) assert.equal(mediaRequests(stack, call.recordingSid), 1);

    // `recgate prefetch 2> log` in a terminal: no bar (no escape codes in the log), a line per job.
    const more = await recordedCall(stack, 'umbrella');
    const [screen, log] = [stream(true), stream(false)];
    assert.equal(await run(screen, log), 0, screen.text + log.text);
    assert.equal(log.text, '');
    const lines = screen.text.trim().split('\n');
    assert.ok(lines.includes(`done  ${more.recordingSid} (call ${more.callSid}, umbrella)`), screen.text);
    assert.equal(lines.at(-1), 'queued 3, done 3, failed 0, skipped 0');
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
