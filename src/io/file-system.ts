/**
 * Which file system a directory is on, from `/proc/self/mountinfo` (Linux; elsewhere nothing is known).
 *
 * The data dir's file system shows in every cold download: each makes a few files that live only while it
 * runs or are written aside (its lock, its generation, the frontier, the pointer and identity record; see
 * `recordings/store/fs.ts`). ext4 without a journal makes such files slow: when it allocates an inode it
 * skips every inode freed in the last minute or more, reading each one's inode table block
 * (`recently_deleted()` in the kernel's fs/ext4/ialloc.c), so one create after a few thousand deletions can
 * cost hundreds of microseconds of CPU, in the process that creates. `npm run bench:fs` measures it.
 * `recgate doctor` and `recgate serve` say so for such a data dir (see {@link slowCreatesNote}).
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

export interface FileSystemInfo {
  /** `ext4`, `tmpfs`, `xfs`, `nfs4`, … */
  type: string;
  /** The mount's source (`/dev/vda`, `tmpfs`, `server:/export`). */
  source: string;
  mountPoint: string;
  /** ext4 only: whether it keeps a journal (its device has a `/proc/fs/jbd2/{device}-8` entry). */
  journal?: boolean;
}

/**
 * The mount of `mountinfo` (the text of `/proc/self/mountinfo`) that holds the absolute path `dir`: the one
 * with the longest mount point that is `dir` or one of its parents (the last such line when one mount hides
 * another at the same point). `journal` is left for {@link fileSystemOf} to fill in.
 */
export function mountOf(mountinfo: string, dir: string): FileSystemInfo | undefined {
  let best: FileSystemInfo | undefined;
  for (const line of mountinfo.split('\n')) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const mountPoint = unescapeMount(line.slice(0, separator).split(' ')[4] ?? '');
    const [type, source] = line.slice(separator + 3).split(' ');
    if (mountPoint === '' || type === undefined || source === undefined) continue;
    const inside =
      dir === mountPoint || dir.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`);
    if (!inside || (best !== undefined && best.mountPoint.length > mountPoint.length)) continue;
    best = { type, source: unescapeMount(source), mountPoint };
  }
  return best;
}

/** The file system `dir` is on; `undefined` where `/proc/self/mountinfo` cannot be read (not Linux). */
export function fileSystemOf(dir: string): FileSystemInfo | undefined {
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  const fs = mountOf(mountinfo, path.resolve(dir));
  if (fs?.type === 'ext4' && fs.source.startsWith('/dev/')) {
    // jbd2 names a journal after its device's kernel name: `dm-0` for a `/dev/mapper/…` link to it.
    const device = path.basename(resolvedDevice(fs.source));
    fs.journal = existsSync(`/proc/fs/jbd2/${device}-8`);
  }
  return fs;
}

/** `/dev/mapper/vg-data` → `/dev/dm-0`; the path itself when it is no link or cannot be read. */
function resolvedDevice(source: string): string {
  try {
    return path.resolve(path.dirname(source), readlinkSync(source));
  } catch {
    return source;
  }
}

/** `ext4 (/dev/vda, no journal)`, `tmpfs (memory)`: a file system in a few words. */
export function describeFileSystem(fs: FileSystemInfo | undefined): string {
  if (fs === undefined) return 'unknown file system';
  if (fs.type === 'tmpfs') return 'tmpfs (memory)';
  const journal = fs.journal === undefined ? '' : fs.journal ? ', journal' : ', no journal';
  return `${fs.type} (${fs.source}${journal})`;
}

/**
 * What to tell an operator whose data dir is on `fs`, or `undefined` when there is nothing to tell: ext4
 * without a journal makes every new file slower the more files were deleted in the last minutes.
 */
export function slowCreatesNote(fs: FileSystemInfo | undefined): string | undefined {
  if (fs?.type !== 'ext4' || fs.journal !== false) return undefined;
  return `${fs.source} is ext4 without a journal, where creating a file costs more CPU the more files were deleted in the last minutes (each cold download makes a few): a journaled file system serves many cold downloads with less CPU`;
}

/** mountinfo writes a space, tab, newline or backslash in a path as its octal escape (`\040`). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
