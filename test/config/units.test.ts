import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseDuration, parseSize, resolveSize } from '../../src/config/units.js';

test('parseSize reads bytes, binary and decimal units, and percentages', () => {
  assert.deepEqual(parseSize('10GiB', 'x'), { bytes: 10 * 1024 ** 3 });
  assert.deepEqual(parseSize('500MB', 'x'), { bytes: 500_000_000 });
  assert.deepEqual(parseSize('500mb', 'x'), { bytes: 500_000_000 });
  assert.deepEqual(parseSize('2G', 'x'), { bytes: 2 * 1024 ** 3 });
  assert.deepEqual(parseSize('1.5KiB', 'x'), { bytes: 1536 });
  assert.deepEqual(parseSize('1048576', 'x'), { bytes: 1_048_576 });
  assert.deepEqual(parseSize('4096B', 'x'), { bytes: 4096 });
  assert.deepEqual(parseSize('15%', 'x'), { percent: 15 });
  assert.deepEqual(parseSize(' 2.5 % ', 'x'), { percent: 2.5 });
});

test('parseSize refuses what is not a size, naming the option', () => {
  for (const bad of ['', 'ten', '0', '0%', '100%', '150%', '-5MB', '5XB', '5 GiBs']) {
    assert.throws(() => parseSize(bad, '--cache-max-bytes'), /--cache-max-bytes/, bad);
  }
});

test('parseDuration reads ms, s, m, h, d, w; bare numbers are seconds', () => {
  assert.equal(parseDuration('30d', 'x'), 30 * 86_400_000);
  assert.equal(parseDuration('12h', 'x'), 12 * 3_600_000);
  assert.equal(parseDuration('90m', 'x'), 5_400_000);
  assert.equal(parseDuration('45s', 'x'), 45_000);
  assert.equal(parseDuration('250ms', 'x'), 250);
  assert.equal(parseDuration('2w', 'x'), 14 * 86_400_000);
  assert.equal(parseDuration('60', 'x'), 60_000);
  for (const bad of ['', '0s', '-1d', '3y', 'soon']) {
    assert.throws(() => parseDuration(bad, '--cache-max-age'), /--cache-max-age/, bad);
  }
});

test('resolveSize: a percentage is that share of the volume, rounded down', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 99 }), fc.integer({ min: 0, max: 2 ** 50 }), (p, volume) => {
      const bytes = resolveSize({ percent: p }, volume);
      assert.ok(bytes <= (volume * p) / 100 && bytes > (volume * p) / 100 - 1);
    }),
  );
  assert.equal(resolveSize({ bytes: 7 }, 100), 7);
});

test('the cache options come from flags or RECGATE_CACHE_* and are checked where they enter', async () => {
  const { loadConfig } = await import('../../src/config/config.js');
  const fromEnv = loadConfig(
    { demo: true },
    { RECGATE_CACHE_MAX_BYTES: '10GiB', RECGATE_CACHE_MIN_FREE: '15%', RECGATE_CACHE_MAX_AGE: '30d' },
  );
  assert.deepEqual(fromEnv.cacheMaxBytes, { bytes: 10 * 1024 ** 3 });
  assert.deepEqual(fromEnv.cacheMinFree, { percent: 15 });
  assert.equal(fromEnv.cacheMaxAgeMs, 30 * 86_400_000);
  const flags = loadConfig({ demo: true, cacheMaxBytes: '500MB' }, { RECGATE_CACHE_MAX_BYTES: '1GiB' });
  assert.deepEqual(flags.cacheMaxBytes, { bytes: 500_000_000 });
  assert.equal(loadConfig({ demo: true }, {}).cacheMaxBytes, undefined);
  assert.throws(() => loadConfig({ demo: true, cacheMinFree: 'lots' }, {}), /cache-min-free/);
  assert.throws(
    () => loadConfig({ demo: true, cacheMaxAgeMs: '1d', databaseUrl: 'sqlite::memory:' }, {}),
    /in-memory/,
  );
});
