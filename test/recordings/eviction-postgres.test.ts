/**
 * Two gateways' caches ("hosts") sharing one recordings directory and one PostgreSQL (index, download
 * locks, eviction lock), each with its own evictor: the limit holds, and no file is evicted twice.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import type { RecordingRef } from '../../src/recordings/cache.js';
import { PostgresCacheIndex } from '../../src/recordings/cache-index/postgres.js';
import { Evictor } from '../../src/recordings/eviction.js';
import { createRecordingCache } from '../../src/recordings/index.js';
import { PostgresLocker } from '../../src/recordings/lock/postgres.js';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import { captureLogs } from '../helpers/log-capture.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { audioBytes, FakeUpstream, newRef, readAll, tempDir } from './helpers.js';

const found = await findPostgres();

if ('reason' in found) {
  test('bounded disk on PostgreSQL', (t) => postgresUnavailable(t, found.reason));
} else {
  const url = found.url;
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  after(() => admin.end());

  test('two hosts on one PostgreSQL hold the limit and never evict the same file twice', async (t) => {
    const schema = `recgate_evict_${process.pid}_${randomBytes(4).toString('hex')}`;
    const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 1 });
    await log.migrate();
    await log.close();
    t.after(() => admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    const dir = join(tempDir(t), 'recordings');
    const size = 40 * 417;
    const data = audioBytes(size);
    const removals = new Map<string, number>();
    const hosts = [0, 1].map(() => {
      const index = new PostgresCacheIndex({ connectionString: url, schema });
      const store = new FsRecordingStore({ dir });
      const remove = store.remove.bind(store);
      store.remove = async (id) => {
        const removed = await remove(id);
        if (removed !== undefined) removals.set(id, (removals.get(id) ?? 0) + 1);
        return removed;
      };
      const locker = new PostgresLocker({ connectionString: url, schema, pollIntervalMs: 5 });
      const { logger } = captureLogs({ plain: true });
      const evictor = new Evictor({
        index,
        store,
        locker,
        logger,
        limits: { maxBytes: { bytes: 4 * size } },
        touchIntervalMs: 60_000,
        checkIntervalMs: 60_000,
      });
      const saved = new Map<string, () => void>();
      const cache = createRecordingCache({
        dir,
        upstream: new FakeUpstream({ data }),
        store,
        locker,
        logger,
        pollIntervalMs: 5,
        onEvent: (e) => {
          evictor.observe(e);
          if (e.event === 'recording_saved') saved.get(e.callSid)?.();
        },
      });
      const play = async (ref: RecordingRef) => {
        const committed = new Promise<void>((resolve) => saved.set(ref.ownerCallSid, resolve));
        const rec = await cache.open(ref);
        const body = await readAll(rec.createReadStream(0, rec.size - 1));
        if (rec.outcome === 'miss') await committed;
        return body;
      };
      return { index, evictor, cache, locker, play };
    });
    t.after(async () => {
      for (const h of hosts) {
        await h.evictor.close();
        await h.cache.close();
        await h.locker.close();
        await h.index.close();
      }
    });
    await Promise.all(hosts.map((h) => h.evictor.start()));
    const refs = Array.from({ length: 16 }, () => newRef());
    for (let i = 0; i < refs.length; i += 4) {
      // Each recording asked of both hosts at once: one downloads, the other follows.
      const group = refs.slice(i, i + 4);
      const bodies = await Promise.all(group.flatMap((ref) => hosts.map((h) => h.play(ref))));
      for (const body of bodies) assert.ok(body.equals(data));
      await Promise.all(hosts.map((h) => h.evictor.settle()));
      // Passes racing on both hosts: one runs, the other finds the eviction lock busy.
      await Promise.all([...hosts, ...hosts].map((h) => h.evictor.evict()));
    }
    await Promise.all(hosts.map((h) => h.evictor.evict()));
    const onDisk = readdirSync(dir).filter((n) => n.endsWith('.mp3'));
    const totals = await hosts[0]!.index.totals();
    assert.ok(onDisk.length <= 4, `${onDisk.length} files on disk`);
    assert.equal(totals.files, onDisk.length, 'the shared index is in step with the directory');
    assert.equal(totals.bytes, onDisk.length * size);
    for (const [id, n] of removals) assert.equal(n, 1, `${id} evicted ${n} times`);
    assert.equal(removals.size, refs.length - onDisk.length, 'every other recording evicted once');
  });
}
