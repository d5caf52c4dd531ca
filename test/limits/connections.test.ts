/**
 * Many idle connections (issue 11, item 4): 5,000 TCP connections that send nothing, against
 * `recgate serve --workers 2`, all open at once (a machine whose limits do not allow that fails, naming
 * the limit). Normal requests are served while they are open, the idle timeout closes
 * every one of them, no worker crashes, and the workers' descriptors come back to what they were.
 * `maxConnections` is shown on one process: connections beyond it are closed at once while a client
 * already connected keeps being served.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { fdCount } from '../helpers/procfs.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { type Stack, startStack } from '../helpers/stack.js';

const IDLE = 5000;
/**
 * Every connection must still be open when the last one is: opening all of them must take less than this.
 * It took 1.2 to 1.5 s with a load average of 10 on 2 cores; 8 s leaves a wide margin, and a machine
 * slower than that is named in the failure (see {@link whyNotAllOpen}).
 */
const IDLE_TIMEOUT_MS = 8000;
/**
 * Above IDLE: cluster hands a connection to whichever worker is free, not strictly in turn (one run split
 * them 2024/3045), so one worker may take most of them.
 */
const MAX_CONNECTIONS = IDLE + 1000;
/** Descriptors a process needs besides the connections (the call log, pipes, the upstream pool, …). */
const FD_MARGIN = 1000;

/** The soft limit on open files of `pid` (`ulimit -n`). */
function fdLimit(pid: number | 'self' = 'self'): number {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft);
}

/** How many local ports the kernel hands out to outgoing connections. */
function ephemeralPorts(): number {
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
  return Number(high) - Number(low) + 1;
}

/**
 * What keeps this machine from holding `IDLE` connections open at once, or [] if nothing does: this
 * process needs a descriptor per connection, and so does the worker that accepts it (cluster hands them
 * out in turn, so each worker gets about half; asked for in full, as a worker may get more); each needs a
 * local port.
 */
function capacityProblems(workerPids: number[]): string[] {
  const problems: string[] = [];
  const own = fdLimit();
  if (own < IDLE + FD_MARGIN) {
    problems.push(`the test process may open ${own} files (ulimit -n), it needs ${IDLE + FD_MARGIN}`);
  }
  for (const pid of workerPids) {
    const limit = fdLimit(pid);
    if (limit < IDLE + FD_MARGIN) {
      problems.push(`worker ${pid} may open ${limit} files (ulimit -n), it needs up to ${IDLE + FD_MARGIN}`);
    }
  }
  const ports = ephemeralPorts();
  if (ports < IDLE) {
    problems.push(`net.ipv4.ip_local_port_range has ${ports} ports for ${IDLE} outgoing connections`);
  }
  return problems;
}

/** When each socket {@link openIdle} opened connected. */
const openedAt = new WeakMap<Socket, number>();

/** Why connecting failed, in the terms of the limit behind it. */
function connectError(err: NodeJS.ErrnoException): Error {
  const why: Record<string, string> = {
    EMFILE: `out of file descriptors in the test process (ulimit -n is ${fdLimit()})`,
    ENFILE: 'the system-wide file table is full (fs.file-max)',
    EADDRNOTAVAIL: `out of local ports (net.ipv4.ip_local_port_range has ${ephemeralPorts()})`,
    ECONNREFUSED: 'the gateway refused it (its listen backlog overflowed, or it is down)',
  };
  return new Error(`opening an idle connection failed: ${err.code}: ${why[err.code ?? ''] ?? err.message}`, {
    cause: err,
  });
}

/** Opens `n` connections that send nothing, `batch` at a time so the listen backlog never overflows. */
async function openIdle(url: string, n: number, batch = 250): Promise<Socket[]> {
  const { hostname, port } = new URL(url);
  const sockets: Socket[] = [];
  for (let i = 0; i < n; i += batch) {
    const opened = Array.from(
      { length: Math.min(batch, n - i) },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect(Number(port), hostname);
          s.once('connect', () => {
            openedAt.set(s, Date.now());
            resolve(s);
          });
          s.once('error', (err) => reject(connectError(err)));
        }),
    );
    sockets.push(...(await Promise.all(opened)));
  }
  for (const s of sockets) s.on('error', () => undefined);
  return sockets;
}

/**
 * Why some of `sockets` were closed before the last of them opened: if opening them all took longer than
 * the idle timeout, the first ones timed out (the machine is too slow for the test as configured);
 * otherwise no idle timeout could have run out, so the gateway closed them on arrival (a worker past its
 * maxConnections, or out of descriptors).
 */
function whyNotAllOpen(sockets: Socket[], openingMs: number): string {
  const closed = sockets.filter((s) => s.closed).length;
  const cause =
    openingMs >= IDLE_TIMEOUT_MS
      ? `opening all ${IDLE} took ${openingMs} ms, longer than the ${IDLE_TIMEOUT_MS} ms idle timeout: this machine is too slow or too loaded for the test as configured (raise IDLE_TIMEOUT_MS)`
      : `opening all ${IDLE} took ${openingMs} ms, within the ${IDLE_TIMEOUT_MS} ms idle timeout, so the gateway closed them on arrival: a worker past --max-connections ${MAX_CONNECTIONS} or out of descriptors`;
  return `only ${sockets.length - closed} of ${IDLE} idle connections were open at once, ${closed} closed before the last opened: ${cause}`;
}

/** Resolves once every socket was closed by the server, or rejects naming how many were not. */
async function allClosed(sockets: Socket[], withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const open = sockets.filter((s) => !s.closed).length;
    if (open === 0) return;
    if (Date.now() > deadline) throw new Error(`${open} of ${sockets.length} connections still open`);
    await sleep(100);
  }
}

describe(`${IDLE} idle connections against 2 workers`, { timeout: 90_000 }, () => {
  let emulator: Emulator;
  let server: ServeProcess;
  let dataDir: string;
  let pids: number[];

  before(async () => {
    emulator = await startEmulator({ port: 0, logger: false });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-idle-'));
    server = await startServeProcess({
      workers: 2,
      dataDir,
      emulator,
      extraArgs: ['--idle-timeout-ms', String(IDLE_TIMEOUT_MS), '--max-connections', String(MAX_CONNECTIONS)],
    });
    pids = [
      ...new Set(
        server.logs
          .filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening'))
          .map((l) => l.pid as number),
      ),
    ];
    assert.equal(pids.length, 2);
    // Not a skip: a machine that cannot hold them all fails, naming the limit to raise.
    const problems = capacityProblems(pids);
    assert.deepEqual(problems, [], `this machine cannot hold ${IDLE} connections: ${problems.join('; ')}`);
  });
  after(async () => {
    await server?.stop();
    await emulator?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('serves normal requests while they are open, closes them all on idle, and nobody crashes', async (t) => {
    const fdsBefore = pids.map((pid) => fdCount(pid));
    const started = Date.now();
    // A normal request after every batch of 250, each on a connection of its own as a new visitor's
    // would be, while the idle ones pile up.
    const agent = new Agent({ pipelining: 0 });
    const idle: Socket[] = [];
    try {
      for (let i = 0; i < IDLE; i += 250) {
        idle.push(...(await openIdle(server.url, 250)));
        const res = await request(`${server.url}/readyz`, { dispatcher: agent, reset: true });
        await res.body.dump();
        assert.equal(res.statusCode, 200);
      }
    } finally {
      await agent.close();
    }
    // Every one of them is open at once: none closed by the time the last one opened.
    const lastOpened = Math.max(...idle.map((s) => openedAt.get(s)!));
    const firstOpened = Math.min(...idle.map((s) => openedAt.get(s)!));
    const open = idle.filter((s) => !s.closed).length;
    const fdsHeld = pids.map((pid) => fdCount(pid));
    assert.equal(open, IDLE, open === IDLE ? '' : whyNotAllOpen(idle, lastOpened - firstOpened));
    await allClosed(idle, IDLE_TIMEOUT_MS + 8000);
    t.diagnostic(
      `all ${IDLE} idle connections open at once (opened in ${lastOpened - firstOpened} ms); worker descriptors ${fdsBefore.join('/')} before, ${fdsHeld.join('/')} after the last opened, all ${IDLE} closed ${Date.now() - started} ms after the first opened`,
    );
    for (const pid of pids) assert.doesNotThrow(() => process.kill(pid, 0), `worker ${pid} is gone`);
    assert.equal(server.logs.filter((l) => l.event === 'worker_exit').length, 0, 'no worker exited');
    // The workers let go of every descriptor the connections took.
    for (let i = 0; pids.some((pid, n) => fdCount(pid) > fdsBefore[n]! + 2); i++) {
      assert.ok(i < 100, `worker descriptors ${pids.map((pid) => fdCount(pid))} vs ${fdsBefore} before`);
      await sleep(50);
    }
  });
});

describe('maxConnections', () => {
  let stack: Stack;

  before(async () => {
    stack = await startStack({ config: { maxConnections: 20 } });
  });
  after(() => stack?.close());

  it('closes connections beyond it at once and keeps serving a client already connected', async () => {
    const agent = new Agent({ connections: 1 });
    try {
      const first = await request(`${stack.url}/healthz`, { dispatcher: agent });
      await first.body.dump();
      const idle = await openIdle(stack.url, 30, 30);
      // The 19 that fit stay open; the 11 beyond are closed by the server without a byte.
      await sleep(300);
      const closed = idle.filter((s) => s.closed).length;
      assert.equal(closed, 11);
      const again = await request(`${stack.url}/healthz`, { dispatcher: agent });
      await again.body.dump();
      assert.equal(again.statusCode, 200);
      for (const s of idle) s.destroy();
    } finally {
      await agent.close();
    }
  });
});
