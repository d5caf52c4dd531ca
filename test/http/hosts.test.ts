/**
 * Two gateways standing for two hosts: separate `recgate serve --workers 2` processes sharing one
 * recordings directory (the shared volume) and one PostgreSQL (call log and download locks). The first
 * play after a start streams to a waiter on the other host while the download runs; a stampede spread over
 * both still makes exactly one upstream request, and every body is exact.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Agent, request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { sha256 as sha } from '../helpers/common.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { ADMIN_TOKEN, JWT_SECRET } from '../helpers/stack.js';

const found = await findPostgres();
const base = 'url' in found ? found.url : undefined;

describe('two hosts on shared storage with PostgreSQL locks', () => {
  if (base === undefined) {
    it('needs PostgreSQL', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
    return;
  }
  const schema = `recgate_hosts_${process.pid}_${randomBytes(3).toString('hex')}`;
  const database = `${base}?schema=${schema}`;
  let emulator: Emulator;
  let dataDir: string;
  const hosts: ServeProcess[] = [];
  const agent = new Agent({ connections: 200 });

  before(async () => {
    emulator = await startEmulator({ port: 0, ttfbMs: 300, bandwidth: 4_000_000 });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-hosts-'));
    for (let i = 0; i < 2; i++) {
      hosts.push(
        await startServeProcess({
          workers: 2,
          dataDir,
          emulator,
          extraArgs: ['--database', database],
        }),
      );
    }
  });
  after(async () => {
    for (const h of hosts) await h.stop();
    await emulator?.close();
    await agent.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: base });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  });

  async function register(rec: { call_sid: string; recording_sid: string | null }): Promise<void> {
    const put = await request(`${hosts[0]!.url}/api/admin/calls/${rec.call_sid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme', recording_sid: rec.recording_sid }),
    });
    assert.equal(put.statusCode, 201);
    await put.body.dump();
  }

  /** A download whose first body chunk has arrived: `rest` reads it to the end. */
  async function firstChunk(host: ServeProcess, callSid: string, token: string) {
    const res = await request(`${host.url}/api/calls/${callSid}/download`, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    const chunks = res.body[Symbol.asyncIterator]();
    const first = await chunks.next();
    assert.ok(!first.done && first.value.length > 0, 'a first chunk');
    let ended = false;
    const rest = (async () => {
      const all = [Buffer.from(first.value)];
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) all.push(next.value);
      ended = true;
      return Buffer.concat(all);
    })();
    return { rest, ended: () => ended };
  }

  // First in the file: the first play after both gateways started, when pools and tables are cold.
  it('streams to a waiter on the other host while the first host still downloads', async () => {
    // 200 kB at 100 kB/s: the download runs about 2 s, far longer than a waiter takes to join it (the
    // emulator encodes a real MP3 per recording, seconds of CPU for large ones, so the file stays small).
    emulator.setThrottle({ ttfbMs: 300, bandwidth: 100_000 });
    try {
      const rec = await emulator.createRecording({ bytes: 200_000 });
      await register(rec);
      emulator.reset();
      const token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
      const downloader = await firstChunk(hosts[0]!, rec.call_sid, token);
      const waiter = await firstChunk(hosts[1]!, rec.call_sid, token);
      const saved = () => hosts[0]!.logs.some((l) => l.event === 'recording_saved');
      assert.ok(!downloader.ended() && !saved(), "the waiter's first byte came while the download ran");
      assert.ok(
        (emulator.stats().media_bytes[rec.recording_sid!] ?? 0) < rec.size,
        'the upstream had not sent the whole recording yet',
      );
      for (const body of [await downloader.rest, await waiter.rest]) assert.equal(sha(body), rec.sha256);
      assert.equal(emulator.stats().total_media_requests, 1);
      assert.ok(
        hosts[1]!.logs.some((l) => l.event === 'lock_wait'),
        'the second host waited on the lock',
      );
      assert.ok(!hosts[1]!.logs.some((l) => l.event === 'cache_miss'), 'and never downloaded itself');
    } finally {
      emulator.setThrottle({ ttfbMs: 300, bandwidth: 4_000_000 });
    }
  });

  it('downloads once for clients spread over both hosts', async () => {
    const rec = await emulator.createRecording({ bytes: 1_500_000 });
    await register(rec);
    emulator.reset();
    const marks = hosts.map((h) => h.logs.length);
    const token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
    // The download lock must be PostgreSQL's (kernel file locks would also work here, on one machine).
    const watcher = new pg.Client({ connectionString: base });
    await watcher.connect();
    let advisoryHeld = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const { rows } = await watcher.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'recgate-lock'`,
        );
        advisoryHeld = Math.max(advisoryHeld, Number(rows[0]!.n));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const bodies = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const res = await request(`${hosts[i % 2]!.url}/api/calls/${rec.call_sid}/download`, {
          dispatcher: agent,
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(res.statusCode, 200);
        return Buffer.from(await res.body.arrayBuffer());
      }),
    );
    watching = false;
    await watch;
    await watcher.end();
    assert.ok(advisoryHeld >= 1, 'a gateway held a PostgreSQL advisory lock while downloading');
    for (const body of bodies) assert.equal(sha(body), rec.sha256);
    assert.equal(emulator.stats().total_media_requests, 1);
    const missesByHost = hosts.map(
      (h, i) => h.logs.slice(marks[i]).filter((l) => l.event === 'cache_miss').length,
    );
    assert.deepEqual(
      missesByHost.sort(),
      [0, 1],
      'one host downloaded, the other streamed from the shared volume',
    );
  });
});
