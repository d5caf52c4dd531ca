/**
 * Many idle connections (issue 11, item 4): 5,000 TCP connections that send nothing, against
 * `recgate serve --workers 2`. Normal requests are served while they are open, the idle timeout closes
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
/** Long enough for thousands to be open at once even when opening them is slow on a loaded machine. */
const IDLE_TIMEOUT_MS = 4000;

/** This process's soft limit on open files. */
function fdLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft);
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
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
    );
    sockets.push(...(await Promise.all(opened)));
  }
  for (const s of sockets) s.on('error', () => undefined);
  return sockets;
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
    assert.ok(
      fdLimit() >= IDLE + 1000,
      `this test opens ${IDLE} connections: raise the open-file limit (ulimit -n), now ${fdLimit()}`,
    );
    emulator = await startEmulator({ port: 0, logger: false });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-idle-'));
    server = await startServeProcess({
      workers: 2,
      dataDir,
      emulator,
      extraArgs: ['--idle-timeout-ms', String(IDLE_TIMEOUT_MS), '--max-connections', '4000'],
    });
    pids = [
      ...new Set(
        server.logs
          .filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening'))
          .map((l) => l.pid as number),
      ),
    ];
    assert.equal(pids.length, 2);
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
    let peak = 0;
    try {
      for (let i = 0; i < IDLE; i += 250) {
        idle.push(...(await openIdle(server.url, 250)));
        const res = await request(`${server.url}/readyz`, { dispatcher: agent, reset: true });
        await res.body.dump();
        assert.equal(res.statusCode, 200);
        peak = Math.max(peak, idle.filter((s) => !s.closed).length);
      }
    } finally {
      await agent.close();
    }
    const fdsHeld = pids.map((pid) => fdCount(pid));
    assert.ok(peak >= IDLE / 2, `only ${peak} idle connections were open at once`);
    await allClosed(idle, IDLE_TIMEOUT_MS + 8000);
    t.diagnostic(
      `${peak} idle connections open at once; worker descriptors ${fdsBefore.join('/')} before, ${fdsHeld.join('/')} after the last opened, all ${IDLE} closed ${Date.now() - started} ms after the first opened`,
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
