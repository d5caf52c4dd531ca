/** Text summaries of V8 profiles (bench/profile.ts): the heaviest functions of a CPU or an allocation profile. */

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

export interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** A function as the summaries name it: name, file under node_modules/, dist/ or src/, line. */
function frameLabel(frame: CallFrame): string {
  return `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/(node_modules|dist|src)\//, '$1/')}:${frame.lineNumber + 1}`;
}

/** The heaviest functions of a V8 CPU profile by self and by inclusive time, as text. */
export function summarizeProfile(
  profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] },
  top = 25,
): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const time = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    time.set(id, (time.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...time.values()].reduce((a, b) => a + b, 0);
  const label = (n: ProfileNode) => frameLabel(n.callFrame);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, t] of time) {
    self.set(label(byId.get(id)!), (self.get(label(byId.get(id)!)) ?? 0) + t);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const key = label(byId.get(cur)!);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + t);
    }
  }
  const list = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, t]) => `${((100 * t) / total).toFixed(1).padStart(6)}%  ${k}`)
      .join('\n');
  return `${(total / 1e6).toFixed(1)} s sampled\n-- self time\n${list(self)}\n-- inclusive time\n${list(inclusive)}`;
}

export interface HeapProfileNode {
  callFrame: CallFrame;
  /** Bytes allocated in this function itself (estimated from the samples). */
  selfSize: number;
  children: HeapProfileNode[];
}

/**
 * What a V8 sampling heap profile says was allocated per request: the total, and the functions allocating
 * most by themselves (self) and with what they call (inclusive), as text.
 */
export function summarizeAllocations(profile: { head: HeapProfileNode }, requests: number, top = 25): string {
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  const walk = (node: HeapProfileNode, above: ReadonlySet<string>): void => {
    const key = frameLabel(node.callFrame);
    total += node.selfSize;
    self.set(key, (self.get(key) ?? 0) + node.selfSize);
    const chain = new Set(above).add(key);
    for (const name of chain) inclusive.set(name, (inclusive.get(name) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child, chain);
  };
  walk(profile.head, new Set());
  const perRequest = (bytes: number) => `${Math.round(bytes / Math.max(1, requests))} B`.padStart(9);
  const list = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, bytes]) => `${perRequest(bytes)}  ${k}`)
      .join('\n');
  return `${perRequest(total).trim()} per request allocated (${requests} requests)\n-- self, per request\n${list(self)}\n-- inclusive, per request\n${list(inclusive)}`;
}
