/**
 * The recording cache reads a recording from the account its ref names: the download, and the ranged
 * slices a far seek fetches ahead of it, all carry `account` to the upstream.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  audioBytes,
  FakeUpstream,
  makeCache,
  newRef,
  readAll,
  settled,
  tempDir,
} from '../recordings/helpers.js';

const ACCOUNT = `AC${'5'.repeat(32)}`;

describe('recording cache and accounts', () => {
  it('asks the upstream for the ref’s account on the download and on every seek-ahead slice', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1_000_000);
    const upstream = new FakeUpstream({ data, chunkSize: 32 * 1024, chunkDelayMs: 16 });
    const { cache } = makeCache(t, dir, upstream, {
      lockTimeoutMs: 10_000,
      seekAhead: {
        blockBytes: 64 * 1024,
        minDistanceBytes: 64 * 1024,
        assumedBytesPerSecond: 100_000,
        maxSliceBytes: 256 * 1024,
      },
    });
    const ref = { ...newRef(), account: ACCOUNT };
    const rec = await cache.open(ref, { readStart: 900_000 });
    const body = await readAll(rec.createReadStream(900_000, data.length - 1));
    assert.ok(body.equals(data.subarray(900_000)));
    await settled(dir, ref, 30_000);
    assert.ok(
      upstream.calls.some((c) => c.start !== undefined),
      'a slice was fetched',
    );
    assert.deepEqual(
      upstream.calls.map((c) => c.account),
      upstream.calls.map(() => ACCOUNT),
    );
  });
});
