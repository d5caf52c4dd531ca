/**
 * The admin commands (`recgate purge`, `prefetch`, `stats`), run from source as an operator runs them,
 * against the in-process emulator and a gateway on the same temporary data dir: their output, their exit
 * codes (0 done, 1 failed, 2 bad usage), and that what they do is what the gateways then see.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { request } from 'undici';
import { runPrefetch } from '../../src/cli/prefetch.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { sha256, tempDir } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { callFiles, finishedNames, settledFiles } from '../helpers/recordings.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

const ENTRY = fileURLToPath(new URL('../helpers/cli-entry.ts', import.meta.url));
const newCallSid = () => `CA${randomBytes(16).toString('hex')}` as CallSid;

interface Outcome {
  code: number;
  out: string;
  err: string;
}

/** Runs `recgate …` from source; async, so the in-process emulator and gateway keep answering. */
export async function recgate(
  stack: Stack,
  args: string[],
  env: Record<string, string> = {},
): Promise<Outcome> {
  const clean: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(clean)) if (/^(RECGATE_|TWILIO_)/.test(name)) delete clean[name];
  Object.assign(clean, {
    RECGATE_JWT_SECRET: JWT_SECRET,
    TWILIO_ACCOUNT_SID: stack.emulator.accountSid,
    TWILIO_AUTH_TOKEN: stack.emulator.authToken,
    TWILIO_API_BASE: stack.emulator.url,
    RECGATE_DATA_DIR: stack.dataDir,
    ...env,
  });
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', ENTRY, ...args],
      { env: clean, timeout: 60_000 },
    );
    return { code: 0, out: stdout, err: stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    assert.equal(typeof e.code, 'number', `recgate did not exit: ${e.stderr}`);
    return { code: e.code!, out: e.stdout ?? '', err: e.stderr ?? '' };
  }
}

async function play(stack: Stack, callSid: string, business: string) {
  const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
    headers: { authorization: `Bearer ${await stack.token(business)}` },
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, bytes };
}

/** A call at the emulator with one recording of `bytes`, registered to `business`. */
async function recordedCall(stack: Stack, business: string, bytes = 8_000) {
  const callSid = newCallSid();
  const rec = await stack.emulator.createRecording({ call_sid: callSid, bytes });
  await stack.register({ businessId: business, callSid });
  return { callSid, recordingSid: rec.recording_sid as RecordingSid, size: rec.size, sha256: rec.sha256 };
}

/** Deletes a recording at the emulator, as Twilio's DELETE does. */
async function deleteAtTwilio(stack: Stack, recordingSid: string): Promise<void> {
  const auth = Buffer.from(`${stack.emulator.accountSid}:${stack.emulator.authToken}`).toString('base64');
  const res = await request(
    `${stack.emulator.url}/2010-04-01/Accounts/${stack.emulator.accountSid}/Recordings/${recordingSid}.json`,
    { method: 'DELETE', headers: { authorization: `Basic ${auth}` } },
  );
  await res.body.dump();
  assert.equal(res.statusCode, 204);
}

function mediaRequests(stack: Stack, sid: string): number {
  return stack.emulator.stats().media_requests[sid] ?? 0;
}

describe('recgate purge', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack?.close());

  it('removes the local copy, marks the call, and the gateway on the data dir refuses later plays', async () => {
    const call = await recordedCall(stack, 'acme');
    const first = await play(stack, call.callSid, 'acme');
    assert.equal(first.status, 200);
    assert.equal(sha256(first.bytes), call.sha256);
    const dir = path.join(stack.dataDir, 'recordings');
    assert.deepEqual(await settledFiles(dir, call.callSid), finishedNames(call.callSid));
    const fetched = stack.emulator.stats().total_media_requests;

    const purged = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(purged.code, 0, purged.err);
    assert.equal(
      purged.out,
      `removed 7.8 KiB (${call.size} bytes) of ${call.recordingSid}\nmarked 1 call purged\n`,
    );
    assert.deepEqual(
      (await callFiles(dir, call.callSid)).filter((n) => !n.endsWith('.lock')),
      [],
    );
    const refused = await play(stack, call.callSid, 'acme');
    assert.equal(refused.status, 410);
    assert.equal(JSON.parse(refused.bytes.toString()).error.code, 'RECGATE_RECORDING_PURGED');
    assert.equal(stack.emulator.stats().total_media_requests, fetched, 'nothing was fetched again');

    const again = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(again.code, 0, again.err);
    assert.equal(again.out, `removed nothing: no local copy of ${call.recordingSid}\nmarked 1 call purged\n`);
  });

  it('exits 1 naming an unknown call, and 2 for bad usage', async () => {
    const unknown = newCallSid();
    const missing = await recgate(stack, ['purge', '--call', unknown]);
    assert.equal(missing.code, 1);
    assert.equal(missing.out, '');
    assert.match(missing.err, new RegExp(`no call ${unknown} in the call log`));

    const bad = await recgate(stack, ['purge', '--call', 'CA123']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--call must be a call SID/);
    const none = await recgate(stack, ['purge']);
    assert.equal(none.code, 2);
    assert.match(none.err, /required option '--call <sid>'/);
  });
});

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
    assert.equal(lines.at(-1), 'queued 1, done 1, failed 0, skipped 3');
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
      env: {
        RECGATE_JWT_SECRET: JWT_SECRET,
        TWILIO_ACCOUNT_SID: stack.emulator.accountSid,
        TWILIO_AUTH_TOKEN: stack.emulator.authToken,
        TWILIO_API_BASE: stack.emulator.url,
        RECGATE_LOG_LEVEL: 'silent',
      },
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

describe('recgate stats and purge, on PostgreSQL', async () => {
  const found = await findPostgres();
  if (!('url' in found)) {
    it('needs PostgreSQL', (t) => postgresUnavailable(t, found.reason));
    return;
  }
  const schemas: string[] = [];
  /** A database URL on a schema of its own, dropped after the suite. */
  const newDatabase = () => {
    const schema = `recgate_cli_${randomBytes(6).toString('hex')}`;
    schemas.push(schema);
    return `${found.url}?schema=${schema}`;
  };
  after(async () => {
    const admin = new pg.Client({ connectionString: found.url });
    await admin.connect();
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  });

  it('purge takes the PostgreSQL download lock, and the gateway on the database refuses later plays', async (t) => {
    const database = newDatabase();
    const stack = await startStack({ dataDir: tempDir(t), config: { databaseUrl: database } });
    t.after(() => stack.close());
    const call = await recordedCall(stack, 'acme');
    assert.equal((await play(stack, call.callSid, 'acme')).status, 200);
    await settledFiles(path.join(stack.dataDir, 'recordings'), call.callSid);
    const purged = await recgate(stack, ['purge', '--call', call.callSid, '--database', database]);
    assert.equal(purged.code, 0, purged.err);
    assert.match(
      purged.out,
      new RegExp(`^removed .* \\(${call.size} bytes\\) of ${call.recordingSid}\nmarked 1 call purged\n$`),
    );
    assert.equal((await play(stack, call.callSid, 'acme')).status, 410);
    const stats = await recgate(stack, ['stats', '--database', database, '--json']);
    assert.equal(JSON.parse(stats.out).files, 0, 'the purged file left the cache index');
  });

  it('stats reports size, files, hit ratio and the top recordings from the cache index, as text and JSON', async (t) => {
    const database = newDatabase();
    const dataDir = tempDir(t);
    const stack = await startStack({ dataDir, config: { databaseUrl: database } });
    const dir = path.join(dataDir, 'recordings');
    const hot = await recordedCall(stack, 'acme', 9_000);
    const cold = await recordedCall(stack, 'globex', 5_000);
    for (const [call, plays] of [
      [hot, 3],
      [cold, 1],
    ] as const) {
      for (let i = 0; i < plays; i++) {
        assert.equal((await play(stack, call.callSid, call === hot ? 'acme' : 'globex')).status, 200);
        await settledFiles(dir, call.callSid);
      }
    }
    // Stopping writes the batched counts, as a running gateway does every few seconds.
    await stack.close();

    const json = await recgate(stack, ['stats', '--database', database, '--json', '--top', '1']);
    assert.equal(json.code, 0, json.err);
    const report = JSON.parse(json.out);
    assert.deepEqual(
      { ...report, top: undefined },
      { files: 2, bytes: hot.size + cold.size, hits: 2, downloads: 2, hit_ratio: 0.5, top: undefined },
    );
    assert.equal(report.top.length, 1);
    assert.deepEqual(
      { ...report.top[0], last_played_at: undefined },
      {
        call_sid: hot.callSid,
        business_id: 'acme',
        recording_sid: hot.recordingSid,
        size: hot.size,
        hits: 2,
        last_played_at: undefined,
      },
    );

    const text = await recgate(stack, ['stats', '--database', database]);
    assert.equal(text.code, 0, text.err);
    const lines = text.out.trim().split('\n');
    assert.match(lines[0]!, /^cache\s+\d+(\.\d)? KiB in 2 files$/);
    assert.equal(lines[1], 'hit ratio  50.0% (2 hits, 2 downloads)');
    assert.equal(lines[2], 'top 2 by hits:');
    assert.match(lines[4]!, new RegExp(`^\\s+2\\s+.*${hot.callSid}\\s+acme\\s+${hot.recordingSid}$`));
    assert.match(lines[5]!, new RegExp(`^\\s+0\\s+.*${cold.callSid}\\s+globex\\s+${cold.recordingSid}$`));

    const bad = await recgate(stack, ['stats', '--database', database, '--top', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--top must be an integer from 1 to 1000/);
  });
});
