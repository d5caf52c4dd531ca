/**
 * Read-only directories for start-up failure tests. Tests run as root in CI, and root ignores file modes,
 * so `chmod` cannot make a directory read-only: a read-only tmpfs mount can.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import type { TestContext } from 'node:test';

/**
 * Mounts an empty read-only tmpfs on `dir` (created if missing) and unmounts it after the test. Where
 * `mount` fails (not root, no mount namespace) the test is skipped with the reason, except in CI (`CI`
 * set), where that fails the test. Returns false when skipped.
 */
export function mountReadOnly(t: TestContext, dir: string): boolean {
  mkdirSync(dir, { recursive: true });
  const out = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir], { encoding: 'utf8' });
  if (out.status !== 0) {
    const reason = `needs a read-only mount, and mount failed: ${(out.stderr || out.error?.message || '').trim()}`;
    if (process.env.CI) throw new Error(reason);
    t.skip(reason);
    return false;
  }
  t.after(() => {
    spawnSync('umount', [dir]);
  });
  return true;
}
