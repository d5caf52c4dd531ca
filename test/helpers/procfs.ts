/** What a process holds open, read from /proc (Linux): for tests that look for leaked descriptors. */
import { readdirSync, readlinkSync } from 'node:fs';

/** How many descriptors `pid` has open. */
export function fdCount(pid: number | 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What each of `pid`'s descriptors points at (a path, `socket:[inode]`, `pipe:[…]`, …). */
export function fdTargets(pid: number | 'self'): string[] {
  const targets: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      targets.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed while we looked
    }
  }
  return targets;
}
