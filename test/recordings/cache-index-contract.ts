/**
 * The contract every CacheIndex backend must pass. A backend's test file calls {@link cacheIndexContract}
 * with a factory that migrates a fresh call log database and opens two indexes on it (as two processes or
 * hosts would).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { CachedFile, CacheIndex } from '../../src/recordings/cache-index/cache-index.js';

export interface CacheIndexSubject {
  index: CacheIndex;
  second: CacheIndex;
  cleanup: () => Promise<void>;
}

export function newSid(): string {
  return `CA${randomBytes(16).toString('hex')}`;
}

export function cacheIndexContract(name: string, open: () => Promise<CacheIndexSubject>): void {
  describe(`CacheIndex contract: ${name}`, () => {
    const withIndex = (fn: (s: CacheIndexSubject) => Promise<void>) => async () => {
      const subject = await open();
      try {
        await fn(subject);
      } finally {
        await subject.index.close();
        await subject.second.close();
        await subject.cleanup();
      }
    };

    test(
      'matches interface',
      withIndex(async ({ index }) => {
        for (const method of [
          'record',
          'backfill',
          'touch',
          'get',
          'oldest',
          'remove',
          'countPlays',
          'playCounts',
          'top',
          'totals',
          'close',
        ]) {
          assert.equal(typeof (index as unknown as Record<string, unknown>)[method], 'function', method);
        }
        assert.deepEqual(await index.totals(), { files: 0, bytes: 0 });
        assert.deepEqual(await index.oldest(10), []);
        assert.deepEqual(await index.playCounts(), { hits: 0, downloads: 0 });
        assert.deepEqual(await index.top(10), []);
      }),
    );

    test(
      'record inserts, then replaces size and times; totals follow',
      withIndex(async ({ index, second }) => {
        const a = newSid();
        const b = newSid();
        await index.record(a, 100, 1000);
        await second.record(b, 50, 2000);
        assert.deepEqual(await second.get(a), {
          callSid: a,
          size: 100,
          lastPlayedMs: 1000,
          cachedAtMs: 1000,
        });
        assert.deepEqual(await index.totals(), { files: 2, bytes: 150 });
        await index.record(a, 70, 3000);
        assert.deepEqual(await index.get(a), { callSid: a, size: 70, lastPlayedMs: 3000, cachedAtMs: 3000 });
        assert.deepEqual(await second.totals(), { files: 2, bytes: 120 });
        assert.equal(await index.get(newSid()), undefined);
      }),
    );

    test(
      'touch moves last play forward only, and ignores unknown calls',
      withIndex(async ({ index, second }) => {
        const a = newSid();
        const b = newSid();
        await index.record(a, 1, 1000);
        await index.record(b, 1, 1000);
        await second.touch(
          new Map([
            [a, 5000],
            [b, 500],
            [newSid(), 9000],
          ]),
        );
        assert.equal((await index.get(a))?.lastPlayedMs, 5000);
        assert.equal((await index.get(b))?.lastPlayedMs, 1000);
        assert.equal((await index.get(a))?.cachedAtMs, 1000);
        assert.deepEqual(await index.totals(), { files: 2, bytes: 2 });
      }),
    );

    test(
      'oldest walks least recently played first, ties by SID, resuming after a cursor',
      withIndex(async ({ index }) => {
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.record({ at: fc.integer({ min: 0, max: 20 }), size: fc.nat(1000) }), {
              maxLength: 25,
            }),
            fc.integer({ min: 1, max: 7 }),
            async (rows, page) => {
              for (const f of await index.oldest(1000)) await index.remove(f.callSid);
              const sids = rows.map(() => newSid());
              for (const [i, r] of rows.entries()) await index.record(sids[i]!, r.size, r.at);
              const expected = rows
                .map((r, i) => ({ callSid: sids[i]!, size: r.size, lastPlayedMs: r.at, cachedAtMs: r.at }))
                .sort((x, y) => x.lastPlayedMs - y.lastPlayedMs || (x.callSid < y.callSid ? -1 : 1));
              const walked: CachedFile[] = [];
              for (;;) {
                const last = walked.at(-1);
                const batch = await index.oldest(page, last);
                if (batch.length === 0) break;
                assert.ok(batch.length <= page);
                walked.push(...batch);
              }
              assert.deepEqual(walked, expected);
              const totals = await index.totals();
              assert.deepEqual(totals, {
                files: rows.length,
                bytes: rows.reduce((n, r) => n + r.size, 0),
              });
            },
          ),
          { numRuns: 15 },
        );
      }),
    );

    test(
      'remove with a last play deletes only a row nobody played since; each row is removed once',
      withIndex(async ({ index, second }) => {
        const a = newSid();
        await index.record(a, 10, 1000);
        await second.touch(new Map([[a, 2000]]));
        assert.equal(await index.remove(a, 1000), false);
        assert.ok(await index.get(a));
        const results = await Promise.all([index.remove(a, 2000), second.remove(a, 2000)]);
        assert.deepEqual(results.sort(), [false, true]);
        assert.equal(await index.get(a), undefined);
        assert.deepEqual(await index.totals(), { files: 0, bytes: 0 });
        assert.equal(await index.remove(a), false);
      }),
    );

    test(
      'backfill inserts only missing rows, and counts them',
      withIndex(async ({ index, second }) => {
        const a = newSid();
        const b = newSid();
        await index.record(a, 10, 5000);
        const inserted = await second.backfill([
          { callSid: a, size: 99, lastPlayedMs: 1, cachedAtMs: 1 },
          { callSid: b, size: 20, lastPlayedMs: 2, cachedAtMs: 1 },
        ]);
        assert.equal(inserted, 1);
        assert.equal((await index.get(a))?.size, 10);
        assert.deepEqual(await index.get(b), { callSid: b, size: 20, lastPlayedMs: 2, cachedAtMs: 1 });
        assert.deepEqual(await index.totals(), { files: 2, bytes: 30 });
        assert.equal(await index.backfill([]), 0);
      }),
    );

    test(
      'countPlays adds hits per row and to the counters, from any instance; top lists the most played',
      withIndex(async ({ index, second }) => {
        const [a, b, c] = [newSid(), newSid(), newSid()].sort();
        for (const sid of [a!, b!, c!]) await index.record(sid, 10, 1000);
        await index.countPlays(
          new Map([
            [a!, 2],
            [b!, 5],
            [newSid(), 4],
          ]),
          3,
        );
        await second.countPlays(new Map([[a!, 3]]), 1);
        await second.countPlays(new Map(), 0);
        assert.deepEqual(await second.playCounts(), { hits: 14, downloads: 4 });
        const top = await index.top(2);
        assert.deepEqual(
          top.map((f) => [f.callSid, f.hits]),
          [
            [a, 5],
            [b, 5],
          ],
          'most hits first, ties by SID',
        );
        assert.deepEqual(top[0], { callSid: a, size: 10, lastPlayedMs: 1000, cachedAtMs: 1000, hits: 5 });
        assert.deepEqual(
          (await second.top(10)).map((f) => f.hits),
          [5, 5, 0],
        );
        await index.remove(a!);
        assert.deepEqual(await index.playCounts(), { hits: 14, downloads: 4 }, 'counters outlive their rows');
        assert.deepEqual(
          (await index.top(1)).map((f) => f.callSid),
          [b],
        );
      }),
    );

    test(
      'a closed index rejects with RECGATE_DATABASE_ERROR',
      withIndex(async ({ index }) => {
        await index.close();
        await assert.rejects(index.totals(), { code: 'RECGATE_DATABASE_ERROR' });
        await index.close();
      }),
    );
  });
}
