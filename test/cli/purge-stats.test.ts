/**
 * `recgate purge` and `recgate stats`, run in a child process beside a gateway on the same data dir: output, exit
 * codes (0 done, 1 failed, 2 bad usage), and that the gateway sees what they did; on SQLite and, for both,
 * PostgreSQL (a schema per case; no skip in CI).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { request } from 'undici';
import { newCallSid, play, recgate, recordedCall } from '../helpers/admin-cli.js';
import { sha256, tempDir } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { callFiles, finishedNames, settledFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';

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
    const stats = await recgate(stack, ['stats', '--json']);
    assert.equal(stats.code, 0, stats.err);
    assert.deepEqual(
      [JSON.parse(stats.out).files, JSON.parse(stats.out).bytes],
      [0, 0],
      'the purged file left the SQLite cache index',
    );

    const again = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(again.code, 0, again.err);
    assert.equal(again.out, `removed nothing: no local copy of ${call.recordingSid}\nmarked 1 call purged\n`);
  });

  it('stats names the business of a variant’s row (`CA….wav`), and purge removes every variant', async () => {
    const call = await recordedCall(stack, 'acme');
    const wav = await request(`${stack.url}/api/calls/${call.callSid}/download?format=wav`, {
      headers: { authorization: `Bearer ${await stack.token('acme')}` },
    });
    await wav.body.dump();
    assert.equal(wav.statusCode, 200);
    const dir = path.join(stack.dataDir, 'recordings');
    // The WAV variant committed and let go of its lock: its file and identity record only.
    const settled = [`.${call.callSid}.wav.id`, `${call.callSid}.wav`].join(' ');
    for (let i = 0; i < 500 && (await callFiles(dir, call.callSid)).join(' ') !== settled; i++)
      await sleep(20);
    assert.equal((await callFiles(dir, call.callSid)).join(' '), settled);
    const stats = await recgate(stack, ['stats', '--json']);
    assert.equal(stats.code, 0, stats.err);
    const row = JSON.parse(stats.out).top.find(
      (r: { call_sid: string }) => r.call_sid === `${call.callSid}.wav`,
    );
    assert.equal(row?.business_id, 'acme', stats.out);
    const purged = await recgate(stack, ['purge', '--call', call.callSid]);
    assert.equal(purged.code, 0, purged.err);
    assert.deepEqual(
      (await callFiles(dir, call.callSid)).filter((n) => !n.endsWith('.lock')),
      [],
    );
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
