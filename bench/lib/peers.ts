/**
 * The servers under test, each started on 127.0.0.1 with its own temporary config and state:
 * recgate (`recgate serve` in a child process), nginx (proxy_cache variants and static files), Varnish,
 * @fastify/static and the Fastify floor (one route that only moves the bytes). Every peer answers the same question: "given this emulator recording, which path do I GET?"
 */
import { type ChildProcess, execFileSync, fork, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN } from '../../src/emulator/index.js';
import { freePort } from '../../test/helpers/common.js';
import { childrenOf } from './procfs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** What a peer needs to know about a recording the emulator holds. */
export interface Recording {
  call_sid: string;
  recording_sid: string;
  size: number;
  sha256: string;
}

/** The upstream every proxying peer fetches from. */
export interface UpstreamInfo {
  url: string;
  accountSid: string;
  authToken: string;
}

export interface Peer {
  readonly name: string;
  readonly origin: string;
  /** Headers every client request carries (credentials). */
  readonly headers: Record<string, string>;
  /** Makes the recording reachable through this peer; resolves with the path clients GET. */
  prepare(recording: Recording): Promise<string>;
  /** The processes that serve requests (workers, not a supervising primary), for memory and CPU readings. */
  servingPids(): number[];
  /**
   * recgate only: how many times since it started its guards turned synchronous file-system calls off, each
   * for 10 s (`recgate_sync_io_off_total` on /metrics, every worker's summed; src/io/sync-guard.ts), or
   * `undefined` when /metrics did not answer. A scenario reads it before and after a run: the count tells
   * whether the run's cold path used synchronous calls or the thread pool.
   */
  syncIoOff?(): Promise<number | undefined>;
  stop(): Promise<void>;
}

/** The sum of every `recgate_sync_io_off_total` series in a Prometheus text exposition. */
export function sumSyncIoOff(exposition: string): number {
  let total = 0;
  for (const line of exposition.split('\n')) {
    const match = /^recgate_sync_io_off_total(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match) total += Number(match[1]);
  }
  return total;
}

/** A peer a scenario will run, not started yet. */
export interface PeerStarter {
  /** The name the started peer carries (its `Peer.name`). */
  readonly name: string;
  start(): Promise<Peer>;
}

/**
 * Runs `use` on each peer in turn: starts it, hands it over, and stops it before the next one starts, so no two
 * peers share the machine. A peer that does not start ends the loop with an error that names it; an error from
 * `use` ends the loop once that peer is stopped.
 */
export async function forEachPeer(
  starters: readonly PeerStarter[],
  use: (peer: Peer) => Promise<void>,
): Promise<void> {
  for (const starter of starters) {
    if (peerFilter !== undefined && !peerFilter.some((prefix) => starter.name.startsWith(prefix))) continue;
    let peer: Peer;
    try {
      peer = await starter.start();
    } catch (err) {
      // The start errors name a probe path or a port, which does not say whether nginx or Varnish failed.
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`${starter.name} did not start: ${message}`, { cause: err });
    }
    try {
      await use(peer);
    } finally {
      await peer.stop();
    }
  }
}

/** Name prefixes of the peers a run starts (`--peers`); every peer when undefined. */
let peerFilter: readonly string[] | undefined;

/** Limits {@link forEachPeer} to peers whose name starts with one of `prefixes` (undefined: all of them). */
export function setPeerFilter(prefixes: readonly string[] | undefined): void {
  peerFilter = prefixes;
}

/** A scratch directory the harness removes at the end, in `root` (the OS's temporary folder by default). */
export async function scratchDir(prefix: string, root: string = tmpdir()): Promise<string> {
  const dir = await mkdtemp(path.join(root, `recgate-bench-${prefix}-`));
  // nginx and varnish workers may run as another user when started as root.
  await chmod(dir, 0o755);
  return dir;
}

/** Absolute path of an executable, looked up on PATH and in the sbin directories, or undefined. */
export function findBinary(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Finds a binary, installing its Debian package with apt-get when it is missing and `install` is set. */
export function ensureBinary(name: string, debianPackage: string, install: boolean): string | undefined {
  const found = findBinary(name);
  if (found || !install) return found;
  process.stderr.write(`bench: ${name} not found; running apt-get install -y ${debianPackage}\n`);
  try {
    execFileSync('apt-get', ['install', '-y', debianPackage], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch {
    execFileSync('apt-get', ['update'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', debianPackage], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
  return findBinary(name);
}

export function binaryVersion(binary: string, args: string[]): string {
  // nginx and wrk print their version to stderr, and wrk exits 1 after doing so.
  const r = spawnSync(binary, args, { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim();
  return text.split('\n')[0]?.trim() || 'unknown';
}

/** Polls `origin + probe` until it answers with an HTTP status below 500, or throws with the log. */
async function waitHttp(
  origin: string,
  probe: string,
  child: ChildProcess,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${probe} server exited (${child.exitCode ?? child.signalCode}): ${log()}`);
    }
    if (Date.now() > deadline) throw new Error(`${origin} did not come up: ${log()}`);
    try {
      const res = await request(`${origin}${probe}`);
      await res.body.dump();
      if (res.statusCode < 500) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Extra Node/V8 flags for the measured recgate process, from RECGATE_BENCH_NODE_FLAGS, placed after the
 * bin's own so they win: `RECGATE_BENCH_NODE_FLAGS=--max-semi-space-size=16 npm run bench:memory` measures
 * Node's default young generation.
 */
function experimentFlags(): string[] {
  return (process.env.RECGATE_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
}

/** The Node flags on bin/recgate.js's `#!/usr/bin/env -S node …` line. */
function binNodeFlags(): string[] {
  const first = readFileSync(path.join(ROOT, 'bin/recgate.js'), 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\/usr\/bin\/env -S node(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : [];
}

/**
 * Node arguments that run the recgate CLI: the built bin as users start it (with the Node flags of its shebang
 * line, then `extraFlags`), or the TypeScript sources through tsx.
 */
function cliEntry(entry: 'dist' | 'source', extraFlags: string[] = []): string[] {
  return entry === 'dist'
    ? [...binNodeFlags(), ...extraFlags, path.join(ROOT, 'bin/recgate.js')]
    : ['--import', 'tsx', path.join(ROOT, 'test/helpers/cli-entry.ts')];
}

/**
 * The Node processes among `pid`'s children: a recgate primary's workers. Run through tsx, the primary also
 * has an esbuild service child, which is not one.
 */
function nodeChildrenOf(pid: number): number[] {
  const node = realpathSync(process.execPath);
  return childrenOf(pid).filter((child) => {
    try {
      return readlinkSync(`/proc/${child}/exe`) === node;
    } catch {
      return false;
    }
  });
}

function spawnLogged(command: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  const out = createWriteStream(logFile);
  let tail = '';
  const keep = (chunk: Buffer) => {
    out.write(chunk);
    tail = (tail + chunk.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.on('exit', () => out.end());
  return { child, log: () => tail };
}

/** The `Authorization` value of the upstream's account, as every peer that proxies it sends. */
export function basicAuth(upstream: UpstreamInfo): string {
  return `Basic ${Buffer.from(`${upstream.accountSid}:${upstream.authToken}`).toString('base64')}`;
}

// ------------------------------------------------------------------------------------- emulator process

export interface EmulatorProcessOptions {
  /** `dist` runs bin/recgate.js (built); `source` runs the TypeScript through tsx. @default 'dist' */
  entry?: 'dist' | 'source';
  /** Port to listen on, for callers that must tell others the URL before it answers. @default a free port */
  port?: number;
  /** `--ttfb-ms`: delay before each media response's first byte. @default 0 */
  ttfbMs?: number;
  /** `--bandwidth`: media bytes per second per response; 0 is unlimited. @default 0 */
  bandwidth?: number;
}

export interface EmulatorProcess extends UpstreamInfo {
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `recgate emulator` in a child process on a free port, with the default account and auth token, and
 * resolves once its control API answers. For harnesses whose own event loop is busy (the soak's clients), so
 * that the emulator's throttle keeps time.
 */
export async function startEmulatorProcess(options: EmulatorProcessOptions = {}): Promise<EmulatorProcess> {
  const { ttfbMs = 0, bandwidth = 0 } = options;
  if (!Number.isInteger(ttfbMs) || ttfbMs < 0) throw new TypeError('options.ttfbMs must be an integer >= 0');
  if (!Number.isInteger(bandwidth) || bandwidth < 0) {
    throw new TypeError('options.bandwidth must be an integer >= 0');
  }
  if (
    options.port !== undefined &&
    (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535)
  ) {
    throw new TypeError('options.port must be an integer from 1 to 65535');
  }
  const dir = await scratchDir('emulator');
  const port = options.port ?? (await freePort());
  const args = [
    ...cliEntry(options.entry ?? 'dist'),
    'emulator',
    '--port',
    String(port),
    '--ttfb-ms',
    String(ttfbMs),
    '--bandwidth',
    String(bandwidth),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, RECGATE_LOG_LEVEL: 'warn' };
  delete env.NODE_OPTIONS;
  const { child, log } = spawnLogged(process.execPath, args, path.join(dir, 'emulator.log'), env);
  child.on('error', () => {});
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(url, '/__emulator/stats', child, log);
  } catch (err) {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    accountSid: DEFAULT_ACCOUNT_SID,
    authToken: DEFAULT_AUTH_TOKEN,
    pid: child.pid!,
    async stop() {
      await stopChild(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------- recgate

export interface RecgateOptions {
  workers: number;
  upstream: UpstreamInfo;
  /** `dist` runs bin/recgate.js (built); `source` runs the TypeScript through tsx. @default 'dist' */
  entry?: 'dist' | 'source';
  /** @default 'recgate {workers}w' */
  name?: string;
  /** Extra `recgate serve` arguments. @default [] */
  extraArgs?: string[];
  /** Extra node flags for the serving processes, e.g. `--cpu-prof`. @default [] */
  nodeFlags?: string[];
  /** Where the data dir is made: another file system than the OS's temporary folder's. @default tmpdir() */
  scratchRoot?: string;
}

export interface RecgatePeer extends Peer {
  readonly pid: number;
  readonly dataDir: string;
}

export const BENCH_JWT_SECRET = 'recgate-bench-jwt-secret-'.padEnd(48, 'x');
const BENCH_ADMIN_TOKEN = 'recgate-bench-admin-token';
/** The business every call `prepare` registers belongs to, and the clients' JWT names. */
export const BENCH_BUSINESS = 'bench';

/**
 * Starts `recgate serve` with a fresh data dir on a free port, registers calls on `prepare`, and signs the clients'
 * JWT. Scenarios call `BenchContext.startRecgate`, which fills in the upstream, entry and node flags of the run;
 * this is for callers without a context (bench/profile.ts).
 */
export async function startRecgate(options: RecgateOptions): Promise<RecgatePeer> {
  if (!Number.isInteger(options.workers) || options.workers < 1) {
    throw new TypeError('options.workers must be a positive integer');
  }
  const dataDir = await scratchDir('recgate', options.scratchRoot);
  const port = await freePort();
  const entry = cliEntry(options.entry ?? 'dist', experimentFlags());
  const args = [
    ...(options.nodeFlags ?? []),
    ...entry,
    'serve',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--workers',
    String(options.workers),
    '--data-dir',
    dataDir,
    '--twilio-api-base',
    options.upstream.url,
    ...(options.extraArgs ?? []),
  ];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RECGATE_JWT_SECRET: BENCH_JWT_SECRET,
    RECGATE_ADMIN_TOKEN: BENCH_ADMIN_TOKEN,
    TWILIO_ACCOUNT_SID: options.upstream.accountSid,
    TWILIO_AUTH_TOKEN: options.upstream.authToken,
    RECGATE_LOG_LEVEL: 'warn',
    // Stopping between runs needs no time for load balancers to notice.
    RECGATE_DRAIN_DELAY: '0',
    // Every benchmark and the soak play one synthetic business; the per-business limit on new downloads is
    // there to keep tenants apart, not to pace a load generator.
    RECGATE_COLD_DOWNLOAD_RATE: '0',
    // Benchmarks and the soak drive one business at thousands of requests a second: the per-business API
    // rate limit, a guard between tenants, would measure itself rather than the gateway. A flag in
    // extraArgs still wins.
    RECGATE_API_RATE: '0',
  };
  delete env.NODE_OPTIONS;
  const { child, log } = spawnLogged(process.execPath, args, path.join(dataDir, 'recgate.log'), env);
  child.on('error', () => {});
  const origin = `http://127.0.0.1:${port}`;
  await waitHttp(origin, '/readyz', child, log);
  if (options.workers > 1) {
    const deadline = Date.now() + 30_000;
    while (nodeChildrenOf(child.pid!).length < options.workers) {
      if (Date.now() > deadline)
        throw new Error(`recgate: ${options.workers} workers did not start: ${log()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // Workers fork before they listen; the primary hands connections only to listening ones.
    await new Promise((r) => setTimeout(r, 1000));
  }
  const token = await new JwtAuth(BENCH_JWT_SECRET).sign(BENCH_BUSINESS, 6 * 3600);
  const registered = new Set<string>();
  return {
    name: options.name ?? `recgate ${options.workers}w`,
    origin,
    pid: child.pid!,
    dataDir,
    headers: { authorization: `Bearer ${token}` },
    async prepare(recording) {
      if (!registered.has(recording.call_sid)) {
        const res = await request(`${origin}/api/admin/calls/${recording.call_sid}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${BENCH_ADMIN_TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ business_id: BENCH_BUSINESS, recording_sid: recording.recording_sid }),
        });
        const text = await res.body.text();
        if (res.statusCode >= 300)
          throw new Error(`recgate: registering the call failed: ${res.statusCode} ${text}`);
        registered.add(recording.call_sid);
      }
      return `/api/calls/${recording.call_sid}/download`;
    },
    servingPids() {
      return options.workers > 1 ? nodeChildrenOf(child.pid!) : [child.pid!];
    },
    async syncIoOff() {
      try {
        const res = await request(`${origin}/metrics`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
        const text = await res.body.text();
        return res.statusCode === 200 ? sumSyncIoOff(text) : undefined;
      } catch {
        return undefined;
      }
    },
    async stop() {
      await stopChild(child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------------------ nginx

export type NginxMode =
  /** proxy_cache with proxy_cache_lock and nginx's default lock timeouts (5 s). */
  | 'proxy-default'
  /** proxy_cache with proxy_cache_lock, lock timeout and lock age raised above any download time here. */
  | 'proxy-long-lock'
  /** As proxy-long-lock, plus the slice module (1 MB slices, each cached and locked on its own). */
  | 'proxy-slice'
  /** Static files from a directory: nginx's best case. */
  | 'static';

/** The peer name of each nginx variant, as the tables show it. */
export const NGINX_PEER_NAMES: Readonly<Record<NginxMode, string>> = {
  'proxy-default': 'nginx lock (defaults)',
  'proxy-long-lock': 'nginx lock (long timeouts)',
  'proxy-slice': 'nginx slice',
  static: 'nginx static',
};

export interface NginxOptions {
  binary: string;
  mode: NginxMode;
  upstream: UpstreamInfo;
  /** `worker_processes`. @default 'auto' */
  workers?: number | 'auto';
  /** For `static`: the directory of `{call_sid}.mp3` files. */
  filesDir?: string;
  /** For the long-lock variants: lock timeout and lock age in seconds. @default 600 */
  lockTimeoutS?: number;
  /** @default NGINX_PEER_NAMES[mode] */
  name?: string;
}

export function nginxConfig(o: NginxOptions & { dir: string; port: number }): string {
  const upstreamUrl = new URL(o.upstream.url);
  const lockS = o.lockTimeoutS ?? 600;
  const proxy = o.mode !== 'static';
  const slice = o.mode === 'proxy-slice';
  const longLock = o.mode === 'proxy-long-lock' || o.mode === 'proxy-slice';
  const isRoot = process.getuid?.() === 0;
  return `# generated by bench/lib/peers.ts (${o.mode})
${isRoot ? 'user root root;\n' : ''}daemon off;
master_process on;
worker_processes ${o.workers ?? 'auto'};
pid ${o.dir}/nginx.pid;
error_log ${o.dir}/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on;
  # Debian's default tcp_nopush on stalls each small (64 KB range) keep-alive response by ~40 ms here.
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_body_temp_path ${o.dir}/client_body;
  proxy_temp_path ${o.dir}/proxy_temp;
  fastcgi_temp_path ${o.dir}/fastcgi_temp;
  uwsgi_temp_path ${o.dir}/uwsgi_temp;
  scgi_temp_path ${o.dir}/scgi_temp;
  types { audio/mpeg mp3; }
  default_type application/octet-stream;
${
  proxy
    ? `  upstream twilio {
    server ${upstreamUrl.host};
    keepalive 64;
  }
  proxy_cache_path ${o.dir}/cache levels=1:2 keys_zone=recordings:32m max_size=50g inactive=1d use_temp_path=off;
`
    : ''
}  server {
    listen 127.0.0.1:${o.port};
    location = /ping { return 204; }
${
  proxy
    ? `    location ~ "^/rec/(RE[0-9a-f]{32})\\.mp3$" {
      proxy_pass http://twilio/2010-04-01/Accounts/${o.upstream.accountSid}/Recordings/$1.mp3;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "${basicAuth(o.upstream)}";
      proxy_cache recordings;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
${longLock ? `      proxy_cache_lock_timeout ${lockS}s;\n      proxy_cache_lock_age ${lockS}s;\n` : ''}      proxy_force_ranges on;
${
  slice
    ? `      slice 1m;
      proxy_cache_key $uri$slice_range;
      proxy_set_header Range $slice_range;
`
    : `      proxy_cache_key $uri;
`
}      add_header X-Cache-Status $upstream_cache_status;
    }
`
    : `    location /files/ {
      alias ${o.filesDir}/;
    }
`
}  }
}
`;
}

export async function startNginx(options: NginxOptions): Promise<Peer> {
  if (options.mode === 'static' && !options.filesDir)
    throw new TypeError('options.filesDir is required for static');
  const dir = await scratchDir('nginx');
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig({ ...options, dir, port }));
  const { child, log } = spawnLogged(options.binary, ['-p', dir, '-c', conf], path.join(dir, 'stdout.log'));
  child.on('error', () => {});
  const origin = `http://127.0.0.1:${port}`;
  await waitHttp(origin, '/ping', child, log);
  return {
    name: options.name ?? NGINX_PEER_NAMES[options.mode],
    origin,
    headers: {},
    async prepare(recording) {
      if (options.mode !== 'static') return `/rec/${recording.recording_sid}.mp3`;
      if (!existsSync(path.join(options.filesDir!, `${recording.call_sid}.mp3`))) {
        throw new Error(`nginx static: ${recording.call_sid}.mp3 is not in ${options.filesDir}`);
      }
      return `/files/${recording.call_sid}.mp3`;
    },
    servingPids() {
      return childrenOf(child.pid!);
    },
    async stop() {
      await stopChild(child, 'SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------- Varnish

export interface VarnishOptions {
  binary: string;
  upstream: UpstreamInfo;
  /** `-s malloc,<size>`. @default '2g' */
  storage?: string;
  /** @default 'Varnish' */
  name?: string;
}

export function varnishVcl(upstream: UpstreamInfo): string {
  const u = new URL(upstream.url);
  return `vcl 4.1;
# generated by bench/lib/peers.ts
backend twilio {
  .host = "${u.hostname}";
  .port = "${u.port}";
  .first_byte_timeout = 120s;
  .between_bytes_timeout = 120s;
}
sub vcl_recv {
  if (req.url == "/ping") { return (synth(204)); }
  if (req.url ~ "^/rec/RE[0-9a-f]{32}\\.mp3$") {
    set req.url = regsub(req.url, "^/rec/", "/2010-04-01/Accounts/${upstream.accountSid}/Recordings/");
    unset req.http.Cookie;
    # Cache although upstream needs credentials: the cache, not the client, holds them.
    unset req.http.Authorization;
    return (hash);
  }
  return (synth(404));
}
sub vcl_backend_fetch {
  set bereq.http.Authorization = "${basicAuth(upstream)}";
}
sub vcl_backend_response {
  set beresp.ttl = 1d;
  set beresp.do_stream = true;
}
`;
}

export async function startVarnish(options: VarnishOptions): Promise<Peer> {
  const dir = await scratchDir('varnish');
  const port = await freePort();
  const vcl = path.join(dir, 'bench.vcl');
  await writeFile(vcl, varnishVcl(options.upstream));
  await mkdir(path.join(dir, 'work'));
  const isRoot = process.getuid?.() === 0;
  const args = [
    '-F',
    ...(isRoot ? ['-j', 'none'] : []),
    '-n',
    path.join(dir, 'work'),
    '-a',
    `127.0.0.1:${port}`,
    '-T',
    'none',
    '-f',
    vcl,
    '-s',
    `malloc,${options.storage ?? '2g'}`,
    // Enough threads up front for the largest stampede (two pools).
    '-p',
    'thread_pool_min=300',
    '-p',
    'thread_pool_max=5000',
  ];
  const { child, log } = spawnLogged(options.binary, args, path.join(dir, 'varnishd.log'));
  child.on('error', () => {});
  const origin = `http://127.0.0.1:${port}`;
  await waitHttp(origin, '/ping', child, log);
  return {
    name: options.name ?? 'Varnish',
    origin,
    headers: {},
    async prepare(recording) {
      return `/rec/${recording.recording_sid}.mp3`;
    },
    servingPids() {
      // The manager's child is the cache process that serves requests.
      return childrenOf(child.pid!);
    },
    async stop() {
      await stopChild(child, 'SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// --------------------------------------------------------------- @fastify/static and the Fastify floor

const STATIC_CHILD = fileURLToPath(new URL('./static-server.ts', import.meta.url));
const FLOOR_CHILD = fileURLToPath(new URL('./floor-server.ts', import.meta.url));

export function startFastifyStatic(options: { filesDir: string; name?: string }): Promise<Peer> {
  return startFilesServer(STATIC_CHILD, options.name ?? '@fastify/static', options.filesDir);
}

/**
 * One Fastify route doing nothing but the bytes (`floor-server.ts`): what Node and Fastify cost alone.
 * `nodeFlags` go to its Node process (a profiler, say).
 */
export function startFastifyFloor(options: {
  filesDir: string;
  name?: string;
  nodeFlags?: readonly string[];
}): Promise<Peer> {
  return startFilesServer(FLOOR_CHILD, options.name ?? FASTIFY_FLOOR, options.filesDir, options.nodeFlags);
}
export const FASTIFY_FLOOR = 'Fastify floor';

/** A Node process (`entry <files dir> <port>`) serving `{call_sid}.mp3` of `filesDir` under `/files/`. */
async function startFilesServer(
  entry: string,
  name: string,
  filesDir: string,
  nodeFlags: readonly string[] = [],
): Promise<Peer> {
  const port = await freePort();
  const child = fork(entry, [filesDir, String(port)], {
    execArgv: ['--import', 'tsx', ...nodeFlags],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`${name} server exited (${code})`)));
  });
  return {
    name,
    origin: `http://127.0.0.1:${port}`,
    headers: {},
    async prepare(recording) {
      if (!existsSync(path.join(filesDir, `${recording.call_sid}.mp3`))) {
        throw new Error(`${name}: ${recording.call_sid}.mp3 is not in ${filesDir}`);
      }
      return `/files/${recording.call_sid}.mp3`;
    },
    servingPids() {
      return [child.pid!];
    },
    async stop() {
      await stopChild(child);
    },
  };
}
