/**
 * `bench/fs-create.ts` (`npm run bench:fs`), run tiny so that it cannot rot.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { measureCreates } from '../../bench/fs-create.js';

test('measureCreates times creates before and after deletions, and leaves nothing behind', async () => {
  const before = (await readdir(tmpdir())).filter((n) => n.startsWith('recgate-fs-create-'));
  const cost = await measureCreates(tmpdir(), 5, 20);
  assert.ok(cost.beforeUs > 0 && Number.isFinite(cost.beforeUs), `before ${cost.beforeUs}`);
  assert.ok(cost.afterUs > 0 && Number.isFinite(cost.afterUs), `after ${cost.afterUs}`);
  assert.match(cost.fileSystem, /\S/);
  const after = (await readdir(tmpdir())).filter((n) => n.startsWith('recgate-fs-create-'));
  assert.deepEqual(after, before);
});
