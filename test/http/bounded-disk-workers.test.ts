/**
 * Bounded disk under `recgate serve --workers 2`, configured by RECGATE_CACHE_MAX_BYTES: both workers
 * commit and evict through the one fs lock backend, the limit holds, and no file is evicted twice.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { startEmulator } from '../../src/emulator/index.js';
import { sha256 } from '../helpers/common.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { ADMIN_TOKEN, JWT_SECRET } from '../helpers/stack.js';

test('--workers 2: the limit holds across workers and each file is evicted once', async (t) => {
  const size = 100_000;
  const emulator = await startEmulator({ port: 0, logger: false });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-bounded-'));
  t.after(async () => {
    await emulator.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  const server = await startServeProcess({
    workers: 2,
    dataDir,
    emulator,
    env: { RECGATE_CACHE_MAX_BYTES: String(2 * size + size / 2) },
  });
  t.after(() => server.stop());
  const token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
  const recs = [];
  for (let i = 0; i < 8; i++) {
    const rec = await emulator.createRecording({ bytes: size });
    const res = await request(`${server.url}/api/admin/calls/${rec.call_sid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme', recording_sid: rec.recording_sid }),
    });
    assert.equal(res.statusCode, 201);
    await res.body.dump();
    recs.push(rec);
  }
  const recordings = path.join(dataDir, 'recordings');
  const onDisk = async () => (await readdir(recordings)).filter((n) => n.endsWith('.mp3'));
  const saved = () => server.logs.filter((l) => l.event === 'recording_saved').length;
  // Two at a time, so both workers commit and evict side by side.
  for (let i = 0; i < recs.length; i += 2) {
    const pair = recs.slice(i, i + 2);
    const bodies = await Promise.all(
      pair.map(async (rec) => {
        const res = await request(`${server.url}/api/calls/${rec.call_sid}/download`, {
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(res.statusCode, 200);
        return sha256(Buffer.from(await res.body.arrayBuffer()));
      }),
    );
    assert.deepEqual(
      bodies,
      pair.map((r) => r.sha256),
    );
    for (let n = 0; n < 500 && saved() < i + 2; n++) await sleep(10);
  }
  const evictions = () => server.logs.filter((l) => l.event === 'cache_evicted');
  for (let n = 0; n < 500 && (await onDisk()).length > 2; n++) await sleep(10);
  const kept = await onDisk();
  assert.ok(kept.length <= 2, `${kept.length} files on disk`);
  // A worker logs an eviction after removing the file, and its lines reach us through a pipe: wait for them.
  for (let n = 0; n < 300 && evictions().length < recs.length - kept.length; n++) await sleep(10);
  const evicted = evictions().map((l) => l.callSid as string);
  assert.equal(new Set(evicted).size, evicted.length, 'no file evicted twice');
  assert.equal(evicted.length, recs.length - kept.length);
  const metrics = await (await request(`${server.url}/metrics`)).body.text();
  const counted = Number(/^recgate_cache_evictions_total\{reason="max_bytes"\} (\d+)/m.exec(metrics)?.[1]);
  assert.equal(counted, evicted.length, 'evictions summed over the workers');
});
