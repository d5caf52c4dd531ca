/**
 * The `--workers` primary (src/cli/cluster.ts) against a worker that dies at the moment the primary writes to it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const FIXTURE = fileURLToPath(new URL('../helpers/cluster-send-race.mjs', import.meta.url));
const BUILT = process.env.RECGATE_TEST_BUILT === '1';

it('sends to workers that have died but are not yet reaped fail quietly (EPIPE); the primary stays up', async () => {
  // Before the fix, the fixture exited 1 with "Unhandled 'error' event ... write EPIPE" in its first rounds:
  // execFile rejects.
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    [...(BUILT ? [] : ['--import', 'tsx']), FIXTURE],
    { timeout: 60_000 },
  );
  assert.equal(stderr, '');
  const lines = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { err?: { code?: string } });
  assert.deepEqual(
    lines.filter((l) => l.survived === true).map((l) => l.rounds),
    [12],
    stdout,
  );
  // At least one of the twelve writes failed at once, and was a debug line (in trials, about half of them).
  const failed = lines.filter((l) => l.event === 'worker_send_failed');
  assert.ok(failed.length >= 1, stdout);
  for (const line of failed) {
    assert.equal(line.type, 'recgate:stop');
    assert.equal(line.err?.code, 'EPIPE');
  }
});
