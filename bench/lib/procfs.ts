/** Linux /proc readings for the processes under test: memory (VmRSS, VmHWM), CPU time, child processes. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';

export interface MemoryReading {
  /** Resident set size now, in bytes. */
  rss: number;
  /** Peak resident set size over the process's life, in bytes. */
  hwm: number;
}

/** VmRSS and VmHWM of a process, or undefined when it is gone. */
export function readMemory(pid: number): MemoryReading | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** User plus system CPU seconds a process has used, or undefined when it is gone. */
export function readCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name, which may itself contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** Direct children of a process. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // exited while listing
    }
  }
  return out;
}

/** Samples VmRSS of some processes every `intervalMs` until stopped; returns each one's peak RSS and final VmHWM. */
export function sampleMemory(
  pids: readonly number[],
  intervalMs = 50,
): { stop(): Array<{ pid: number; peakRss: number; hwm: number }> } {
  const peaks = new Map<number, number>(pids.map((p) => [p, 0]));
  const tick = () => {
    for (const pid of pids) {
      const m = readMemory(pid);
      if (m && m.rss > peaks.get(pid)!) peaks.set(pid, m.rss);
    }
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return pids.map((pid) => ({ pid, peakRss: peaks.get(pid)!, hwm: readMemory(pid)?.hwm ?? Number.NaN }));
    },
  };
}

/** The file system a directory is on, as /proc/self/mountinfo describes its mount. */
export interface FileSystemInfo {
  /** `ext4`, `tmpfs`, `xfs`, … */
  type: string;
  /** The mount's source (`/dev/vda`, `tmpfs`). */
  source: string;
  mountPoint: string;
  /**
   * For ext4 only: whether the file system keeps a journal (its device has a `/proc/fs/jbd2/{dev}-8` entry).
   * ext4 without a journal looks past every inode freed in the last minute or more when it allocates a new
   * one (`recently_deleted()` in the kernel's fs/ext4/ialloc.c), so creating files right after deleting
   * many costs CPU that grows with how many were deleted.
   */
  journal?: boolean;
}

/** The file system `dir` is on (the longest mount point that contains it); undefined off Linux. */
export function fileSystemOf(dir: string): FileSystemInfo | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let best: FileSystemInfo | undefined;
  for (const line of text.split('\n')) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const mountPoint = unescapeMount(left.split(' ')[4] ?? '');
    const [type, source] = right.split(' ');
    if (type === undefined || source === undefined) continue;
    const inside = dir === mountPoint || dir.startsWith(mountPoint === '/' ? '/' : `${mountPoint}/`);
    if (!inside || (best !== undefined && best.mountPoint.length > mountPoint.length)) continue;
    best = { type, source: unescapeMount(source), mountPoint };
  }
  if (best?.type === 'ext4' && best.source.startsWith('/dev/')) {
    best.journal = existsSync(`/proc/fs/jbd2/${best.source.slice('/dev/'.length).replaceAll('/', '!')}-8`);
  }
  return best;
}

/** mountinfo escapes spaces, tabs, newlines and backslashes as octal (`\040`). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** `ext4 (/dev/vda, no journal)`, `tmpfs`: what the bench prints about where the data dirs are. */
export function describeFileSystem(fs: FileSystemInfo | undefined): string {
  if (fs === undefined) return 'unknown file system';
  const journal = fs.journal === undefined ? '' : fs.journal ? ', journal' : ', no journal';
  return fs.type === 'tmpfs' ? 'tmpfs (memory)' : `${fs.type} (${fs.source}${journal})`;
}
