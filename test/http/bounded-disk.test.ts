/**
 * The bounded disk as `recgate serve` wires it: --cache-max-bytes through the configuration, the evictor
 * fed by the gateway's cache, its metrics on /metrics (evictions and the bytes they freed), and evicted
 * recordings downloaded again on demand.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { request } from 'undici';
import type { CallSid } from '../../src/sid.js';
import { sha256, until as untilWithin } from '../helpers/common.js';
import { startStack } from '../helpers/stack.js';

test('--cache-max-bytes through the gateway: evicts, counts, and downloads again', async (t) => {
  const size = 100_000;
  const stack = await startStack({ config: { cacheMaxBytes: String(2 * size + size / 2) } });
  t.after(() => stack.close());
  const token = await stack.token('acme');
  const recordings = path.join(stack.dataDir, 'recordings');
  const onDisk = () => readdirSync(recordings).filter((n) => n.endsWith('.mp3'));
  const metric = async (line: RegExp) => {
    const text = await (await request(`${stack.url}/metrics`)).body.text();
    return Number(line.exec(text)?.[1] ?? Number.NaN);
  };
  const evictedBytes = /^recgate_cache_evicted_bytes_total\{reason="max_bytes"\} (\d+)/m;
  // Absent (NaN) until the first eviction.
  const evictedBefore = (await metric(evictedBytes)) || 0;
  const calls = [];
  for (let i = 0; i < 4; i++) {
    const rec = await stack.emulator.createRecording({ bytes: size });
    await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
    calls.push(rec);
  }
  const play = async (callSid: string) => {
    const res = await request(`${stack.url}/api/calls/${callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    return sha256(Buffer.from(await res.body.arrayBuffer()));
  };
  const until = (what: string, ok: () => boolean | Promise<boolean>) => untilWithin(what, ok, 5000);
  for (const [i, rec] of calls.entries()) {
    assert.equal(await play(rec.call_sid), rec.sha256);
    // Indexed on commit; from the third on, each commit evicts the least recently played.
    await until(`${rec.call_sid} is indexed and the limit holds`, async () => {
      const evicted = await metric(/^recgate_cache_evictions_total\{reason="max_bytes"\} (\d+)/m);
      return (
        (await metric(/^recgate_cache_files (\d+)/m)) === Math.min(i + 1, 2) &&
        (i < 2 || evicted === i - 1) &&
        onDisk().length === Math.min(i + 1, 2)
      );
    });
  }
  assert.deepEqual(
    onDisk().sort(),
    calls
      .slice(2)
      .map((c) => `${c.call_sid}.mp3`)
      .sort(),
  );
  assert.ok((await metric(/^recgate_cache_bytes (\d+)/m)) <= 2 * size + size / 2);
  assert.equal(
    (await metric(evictedBytes)) - evictedBefore,
    calls[0]!.size + calls[1]!.size,
    'the bytes of the two evicted recordings are counted',
  );
  const before = stack.emulator.stats().total_media_requests;
  assert.equal(await play(calls[0]!.call_sid), calls[0]!.sha256, 'an evicted recording plays again');
  assert.equal(stack.emulator.stats().total_media_requests, before + 1, 'downloaded again');
});
