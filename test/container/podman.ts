/**
 * Podman as this machine runs it: as root, with the `runc` runtime, host networking, and a containers.conf
 * that sets no default rlimits (crun and the default rlimits are refused here). Every call goes through
 * {@link podman}, so that these settings live in one place.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Why podman cannot run on this machine, or undefined when it can. */
export function podmanUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'podman runs only as root on these machines, and this is not root';
  const found = ['/usr/bin/podman', '/usr/local/bin/podman'].some((p) => existsSync(p));
  if (!found) return 'podman is not installed (apt-get install podman runc debootstrap)';
  return undefined;
}

let confDir: string | undefined;

/** The containers.conf every podman call uses; written once per process, removed at exit. */
function containersConf(): string {
  if (confDir === undefined) {
    confDir = mkdtempSync(join(tmpdir(), 'recgate-podman-'));
    writeFileSync(join(confDir, 'containers.conf'), '[containers]\ndefault_ulimits = []\n');
    const dir = confDir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return join(confDir, 'containers.conf');
}

/** The environment podman commands run with. */
export function podmanEnv(): NodeJS.ProcessEnv {
  return { ...process.env, CONTAINERS_CONF: containersConf() };
}

/**
 * Runs a command to its end and returns what it printed. `input` is written to its stdin; `echo` also
 * copies its output to this process's stderr as it comes (for long builds, so that a stuck step shows).
 */
export function run(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; echo?: boolean; timeoutMs?: number } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 600_000,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (options.echo) process.stderr.write(d);
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (options.echo) process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    if (child.stdin) {
      // A command that exits before reading its input closes the pipe: that is its answer, not ours to fail.
      child.stdin.on('error', () => {});
      child.stdin.end(options.input);
    }
  });
}

/** `podman --runtime runc ARGS`; resolves with its output whatever the exit code. */
export function podman(
  args: readonly string[],
  options: { echo?: boolean; timeoutMs?: number } = {},
): Promise<Run> {
  return run('podman', ['--runtime', 'runc', ...args], { ...options, env: podmanEnv() });
}

/** Like {@link podman}, but throws with the command and its stderr unless it exits 0; resolves to stdout. */
export async function podmanOk(
  args: readonly string[],
  options: { echo?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  const result = await podman(args, options);
  if (result.code !== 0) {
    throw new Error(
      `podman ${args.join(' ')} exited ${result.code ?? result.signal}:\n${result.stderr.slice(-4000)}`,
    );
  }
  return result.stdout;
}

export interface ImageNode {
  tags: string[];
  parent?: string;
}

/** Every local image, build steps included, by full ID (no `sha256:`), with its tags and its parent. */
export async function imageGraph(): Promise<Map<string, ImageNode>> {
  const listing = await podmanOk([
    'images',
    '--all',
    '--no-trunc',
    '--format',
    '{{.ID}} {{.Repository}}:{{.Tag}}',
  ]);
  const graph = new Map<string, ImageNode>();
  for (const line of listing.split('\n').filter(Boolean)) {
    const [rawId, tag] = line.split(' ') as [string, string];
    const id = rawId.replace(/^sha256:/, '');
    const node = graph.get(id) ?? { tags: [] };
    if (tag !== '<none>:<none>') node.tags.push(tag);
    graph.set(id, node);
  }
  if (graph.size === 0) return graph;
  const parents = await podman(['image', 'inspect', '--format', '{{.Id}} {{.Parent}}', ...graph.keys()]);
  for (const line of parents.stdout.split('\n')) {
    const [id, parent] = line.trim().split(' ');
    if (id && parent) graph.get(id.replace(/^sha256:/, ''))!.parent = parent.replace(/^sha256:/, '');
  }
  return graph;
}

/** The images built on `ancestor` (a full ID), the youngest first, so they can be removed in that order. */
export function descendantsOf(graph: Map<string, ImageNode>, ancestor: string): string[] {
  const depth = new Map<string, number>();
  for (const id of graph.keys()) {
    let d = 0;
    for (let at = graph.get(id)?.parent; at !== undefined; at = graph.get(at)?.parent) {
      d++;
      if (at === ancestor) {
        depth.set(id, d);
        break;
      }
    }
  }
  return [...depth].sort((a, b) => b[1] - a[1]).map(([id]) => id);
}
