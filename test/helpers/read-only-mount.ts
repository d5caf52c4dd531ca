/**
 * Mounts for storage tests: tmpfs for read-only directories (start-up failure tests), small volumes that
 * fill up and volumes remounted read-only at run time; small ext4 volumes with or without a journal. Tests run as root in CI, and root ignores file modes,
 * so `chmod` cannot make a directory read-only: a read-only mount can.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

export interface TmpfsOptions {
  /** The volume's size, as `mount -o size=` takes it (`4m`, `512k`). @default '1m' */
  size?: string;
  /** Mount it read-only. @default false */
  readOnly?: boolean;
}

/**
 * Mounts an empty tmpfs on `dir` (created if missing) and unmounts it after the test (if it is still
 * mounted then). Where `mount` fails (not root, no mount namespace) the test is skipped with the reason,
 * except in CI (`CI` set), where that fails the test. Returns false when skipped.
 *
 * Unmount happens in an `after` hook registered now; hooks run in the order they were registered, so
 * whatever keeps files open on the volume (a gateway) must be closed by a hook registered before this one.
 */
export function mountTmpfs(t: TestContext, dir: string, options: TmpfsOptions = {}): boolean {
  mkdirSync(dir, { recursive: true });
  const flags = `${options.readOnly ? 'ro,' : ''}size=${options.size ?? '1m'}`;
  const out = spawnSync('mount', ['-t', 'tmpfs', '-o', flags, 'tmpfs', dir], { encoding: 'utf8' });
  if (out.status !== 0) {
    const reason = `needs a tmpfs mount, and mount failed: ${(out.stderr || out.error?.message || '').trim()}`;
    if (process.env.CI) throw new Error(reason);
    t.skip(reason);
    return false;
  }
  t.after(() => unmount(dir));
  return true;
}

/**
 * Mounts a new 16 MiB ext4 volume on `dir` (created if missing), made in an image file beside it, with or
 * without a journal, and unmounts it and removes the image after the test. Skips or fails as
 * {@link mountTmpfs} does where `mkfs.ext4` or the loop mount is refused. Returns false when skipped.
 */
export function mountExt4(t: TestContext, dir: string, options: { journal: boolean }): boolean {
  mkdirSync(dir, { recursive: true });
  const image = `${dir}.ext4`;
  const steps: Array<[string, string[]]> = [
    ['truncate', ['-s', '16M', image]],
    ['mkfs.ext4', ['-q', '-F', '-O', options.journal ? 'has_journal' : '^has_journal', image]],
    ['mount', ['-o', 'loop', image, dir]],
  ];
  for (const [command, args] of steps) {
    const out = spawnSync(command, args, { encoding: 'utf8' });
    if (out.status !== 0) {
      rmSync(image, { force: true });
      const reason = `needs an ext4 loop mount, and ${command} failed: ${(out.stderr || out.error?.message || '').trim()}`;
      if (process.env.CI) throw new Error(reason);
      t.skip(reason);
      return false;
    }
  }
  t.after(() => {
    unmount(dir);
    rmSync(image, { force: true });
  });
  return true;
}

/** Mounts an empty read-only tmpfs on `dir`; see {@link mountTmpfs}. */
export function mountReadOnly(t: TestContext, dir: string): boolean {
  return mountTmpfs(t, dir, { readOnly: true });
}

/**
 * Remounts the tmpfs on `dir` read-only or read-write, keeping its files. A volume with a file open for
 * writing (a lock file a process is about to close, say) cannot turn read-only: that is retried until
 * `timeoutMs`; then, or on any other failure, it throws.
 */
export async function remount(dir: string, mode: 'ro' | 'rw', timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = spawnSync('mount', ['-o', `remount,${mode}`, dir], { encoding: 'utf8' });
    if (out.status === 0) return;
    if (!/busy/i.test(out.stderr) || Date.now() > deadline) {
      throw new Error(`remount,${mode} ${dir} failed: ${out.stderr.trim()}`);
    }
    await sleep(20);
  }
}

/** Unmounts `dir` if something is mounted there; lazily when files on it are still open. */
export function unmount(dir: string): void {
  if (spawnSync('mountpoint', ['-q', dir]).status !== 0) return;
  if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
}
