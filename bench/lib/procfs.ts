/** Linux /proc readings for the processes under test: memory (VmRSS, VmHWM), CPU time, child processes. */
import { readdirSync, readFileSync } from 'node:fs';

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

export { describeFileSystem, type FileSystemInfo, fileSystemOf } from '../../src/io/file-system.js';
