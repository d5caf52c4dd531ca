/**
 * Clients that disconnect at every phase of a download (issue 11, item 4), against
 * `recgate serve --workers 2 --upstream-concurrency 1`: before their headers are complete, while waiting
 * for the lock or the size, during a cold download's streaming, during a cached file's streaming, while
 * queued for an upstream admission slot, and during a ranged cold request served by a seek-ahead slice.
 * The download still completes for the clients that stay, byte for byte (sha256 against the emulator's),
 * from one upstream request (plus the slices, for the ranged phase); a queued download every client left
 * fetches nothing; and once things settle the workers hold no more descriptors than before, none of them
 * on a recording.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { sha256 } from '../helpers/common.js';
import { fdTargets } from '../helpers/procfs.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { ADMIN_TOKEN, JWT_SECRET } from '../helpers/stack.js';

const SIZE = 2_000_000;
const PER_PHASE = 10;
/**
 * The ranged phase's recording and range: a seek to 90% of it is further ahead than the download's first
 * second at the rate seek-ahead assumes before measuring one (4 MiB), so it is served by a slice; and its
 * 10% slice budget holds more than a block.
 */
const RANGED_SIZE = 6_000_000;
const RANGE = { start: 5_400_000, end: 5_599_999 };

/**
 * A pass-through HTTP proxy in front of the emulator that holds the media GETs of chosen recordings until
 * released: a download admitted for such a recording keeps its admission slot for exactly as long as the
 * test wants, with no timing involved.
 */
async function startHoldingProxy(target: string) {
  let release!: () => void;
  let released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const held = new Set<string>();
  const agent = new HttpAgent({ keepAlive: true });
  const server = createServer((req, res) => {
    const sid = /\/Recordings\/(RE[0-9a-f]{32})/.exec(req.url ?? '')?.[1];
    const forward = () => {
      if (res.destroyed) return;
      const upstream = httpRequest(
        new URL(req.url ?? '/', target),
        { method: req.method, headers: req.headers, agent },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
      req.pipe(upstream);
    };
    if (req.method === 'GET' && sid !== undefined && held.has(sid)) void released.then(forward);
    else forward();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Media GETs of `recordingSid` wait from now until {@link releaseAll}. */
    hold: (recordingSid: string) => held.add(recordingSid),
    releaseAll: () => {
      held.clear();
      release();
      released = new Promise<void>((resolve) => {
        release = resolve;
      });
    },
    close: async () => {
      release();
      server.closeAllConnections();
      server.close();
      agent.destroy();
    },
  };
}

/**
 * Reads until `check` holds for what `read` resolves to, and resolves to that; rejects naming `what` and the
 * last value read after `withinMs`.
 */
async function until<T>(
  what: string,
  read: () => Promise<T>,
  check: (value: T) => boolean,
  withinMs = 30_000,
) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`${what}: still ${JSON.stringify(value)} after ${withinMs} ms`);
    await sleep(50);
  }
}

/** Inodes of `pid`'s TCP sockets connected to `port` (its upstream pool's connections to the emulator). */
function socketsTo(pid: number, port: number): Set<string> {
  const inodes = new Set<string>();
  for (const table of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const remote = fields[2];
      if (remote !== undefined && Number.parseInt(remote.split(':')[1]!, 16) === port) inodes.add(fields[9]!);
    }
  }
  return inodes;
}

describe('clients that disconnect at every phase, 2 workers', { timeout: 90_000 }, () => {
  let emulator: Emulator;
  let proxy: Awaited<ReturnType<typeof startHoldingProxy>>;
  let server: ServeProcess;
  let dataDir: string;
  let token: string;
  let pids: number[];

  before(async () => {
    // 2 MB after 800 ms, at 2 MB/s: a wait for the size, then a second of streaming, to disconnect in.
    emulator = await startEmulator({ port: 0, logger: false, ttfbMs: 800, bandwidth: 2_000_000 });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-disconnect-'));
    proxy = await startHoldingProxy(emulator.url);
    // One download at a time per worker, so a few held downloads fill both workers' slots.
    server = await startServeProcess({
      workers: 2,
      dataDir,
      emulator: { url: proxy.url, accountSid: emulator.accountSid, authToken: emulator.authToken },
      extraArgs: ['--upstream-concurrency', '1'],
    });
    token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
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
    await proxy?.close();
    await emulator?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  async function coldRecording(bytes = SIZE) {
    const rec = await emulator.createRecording({ bytes });
    const res = await request(`${server.url}/api/admin/calls/${rec.call_sid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme', recording_sid: rec.recording_sid }),
      reset: true,
    });
    assert.equal(res.statusCode, 201);
    await res.body.dump();
    return rec;
  }

  /**
   * Sends `head` on a fresh connection and reads until `stopAt` bytes came (then reads no more, as a
   * client that went away would); once `cut` resolves, destroys the connection. Resolves with the bytes read.
   */
  function leaver(
    head: string,
    cut: (received: () => number) => Promise<void>,
    stopAt = Infinity,
  ): Promise<number> {
    const { hostname, port } = new URL(server.url);
    const socket = connect(Number(port), hostname);
    let received = 0;
    socket.on('data', (c: Buffer) => {
      received += c.length;
      if (received >= stopAt) socket.pause();
    });
    socket.on('error', () => undefined);
    socket.write(head);
    return cut(() => received).then(() => {
      socket.destroy();
      return received;
    });
  }

  const get = (callSid: string) =>
    `GET /api/calls/${callSid}/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`;

  /** Waits until `received()` reaches `bytes`, then a little more with the socket unread. */
  const midStream = (bytes: number) => async (received: () => number) => {
    while (received() < bytes) await sleep(5);
    await sleep(100);
  };
  const MID = 100_000;

  /** The recording's bytes, or with `range` the bytes of that range. */
  async function body(callSid: string, range?: { start: number; end: number }): Promise<Buffer> {
    const res = await request(`${server.url}/api/calls/${callSid}/download`, {
      headers: {
        authorization: `Bearer ${token}`,
        ...(range ? { range: `bytes=${range.start}-${range.end}` } : {}),
      },
      reset: true,
    });
    assert.equal(res.statusCode, range ? 206 : 200);
    return Buffer.from(await res.body.arrayBuffer());
  }

  async function whole(callSid: string): Promise<string> {
    return sha256(await body(callSid));
  }

  /** Upstream slots in use and downloads queued for one, from /metrics (summed over the workers). */
  async function slots(): Promise<{ admitted: number; queued: number }> {
    const res = await request(`${server.url}/metrics`, { reset: true });
    const lines = (await res.body.text()).split('\n');
    const gauge = (name: string) => {
      const line = lines.find((l) => l.startsWith(`${name} `));
      return line === undefined ? 0 : Number(line.split(' ')[1]);
    };
    return { admitted: gauge('recgate_upstream_admitted'), queued: gauge('recgate_upstream_queue_depth') };
  }

  it('completes the download for the others, from one upstream request, and leaks no descriptor', async (t) => {
    // Warm up what each worker opens once (the call log, the upstream connection pool), then count.
    const warm = await coldRecording(50_000);
    for (let i = 0; i < 4; i++) assert.equal(await whole(warm.call_sid), warm.sha256);
    await sleep(500);
    const beforeTargets = pids.map((pid) => fdTargets(pid));
    const recordings = path.join(dataDir, 'recordings');
    const isRecording = (target: string) => target.startsWith(recordings);
    const upstreamPort = Number(new URL(proxy.url).port);
    // Counted: descriptors other than recordings (see below) and the upstream pool's connections to the
    // emulator (through the proxy), which come and go with its keep-alive.
    const counted = (targets: string[], n: number) => {
      const upstream = socketsTo(pids[n]!, upstreamPort);
      return targets.filter((x) => !isRecording(x) && !upstream.has(/^socket:\[(\d+)\]$/.exec(x)?.[1] ?? ''));
    };
    const countedBefore = beforeTargets.map((targets, n) => counted(targets, n).length);

    const rec = await coldRecording();
    emulator.reset();
    const started = Date.now();
    const logsBefore = server.logs.length;
    const phases = {
      beforeHeaders: Array.from({ length: PER_PHASE }, () =>
        leaver(`GET /api/calls/${rec.call_sid}/download HTTP/1.1\r\nHost: x\r\nAuthor`, () => sleep(50)),
      ),
      // The size is known only after the 800 ms upstream first-byte time; one worker downloads, the other
      // waits for its lock or follows it.
      waitingForSize: Array.from({ length: PER_PHASE }, () => leaver(get(rec.call_sid), () => sleep(300))),
      coldStreaming: Array.from({ length: PER_PHASE }, () => leaver(get(rec.call_sid), midStream(MID), MID)),
    };
    const stayers = Array.from({ length: 4 }, () => whole(rec.call_sid));
    const received = {
      beforeHeaders: await Promise.all(phases.beforeHeaders),
      waitingForSize: await Promise.all(phases.waitingForSize),
      coldStreaming: await Promise.all(phases.coldStreaming),
    };
    for (const hash of await Promise.all(stayers)) assert.equal(hash, rec.sha256);
    // The worker that did not download waited on the other's lock, the phase the "waiting" clients left in
    // (when node:cluster handed both workers some of these requests, as it does nearly always).
    const phaseLogs = server.logs.slice(logsBefore);
    const servingPids = new Set(
      phaseLogs.filter((l) => l.msg === 'request completed' && typeof l.pid === 'number').map((l) => l.pid),
    );
    assert.ok(
      phaseLogs.some((l) => l.event === 'lock_wait') || servingPids.size < 2,
      `no worker waited for the download lock, though ${servingPids.size} workers served requests`,
    );
    assert.ok(received.beforeHeaders.every((n) => n === 0));
    assert.ok(
      received.waitingForSize.every((n) => n === 0),
      `${received.waitingForSize}`,
    );
    assert.ok(
      received.coldStreaming.every((n) => n >= MID && n < SIZE),
      `${received.coldStreaming}`,
    );

    // The recording is cached now: leave in the middle of its streaming too.
    const cachedStreaming = await Promise.all(
      Array.from({ length: PER_PHASE }, () => leaver(get(rec.call_sid), midStream(MID), MID)),
    );
    assert.ok(
      cachedStreaming.every((n) => n < SIZE),
      `${cachedStreaming}`,
    );
    for (let i = 0; i < 2; i++) assert.equal(await whole(rec.call_sid), rec.sha256);
    assert.equal(emulator.stats().media_requests[rec.recording_sid!], 1);

    // Queued for an admission slot. Downloads whose upstream answer the proxy holds take both workers' one
    // slot. Blockers go two at once, on connections opened back to back, which cluster hands to different
    // workers when both are free; more pairs follow until both slots are taken (a busy worker may let the
    // other take several pairs; the extra blockers wait in the queue and download once released).
    const blockers: Array<{ sha256: string; read: Promise<string>; recordingSid: string }> = [];
    while ((await slots()).admitted < 2) {
      assert.ok(blockers.length < 20, 'twenty blockers never took both workers’ slots');
      const pair = [await coldRecording(50_000), await coldRecording(50_000)];
      for (const b of pair) proxy.hold(b.recording_sid!);
      for (const b of pair) {
        blockers.push({ sha256: b.sha256!, read: whole(b.call_sid), recordingSid: b.recording_sid! });
      }
      await until(
        `blockers ${blockers.length - 1} and ${blockers.length} admitted or queued`,
        slots,
        (x) => x.admitted + x.queued === blockers.length,
      );
    }
    const queuedBlockers = blockers.length - 2;
    // Each leaver's recording is its own, so each is a download of its own in its worker's queue. `kept` is
    // wanted by two clients that stay (its download queued in one worker; in the other, if a client lands
    // there, a follower of it): leaving the queue must cancel only downloads nobody waits for any more.
    const abandoned = await Promise.all(Array.from({ length: PER_PHASE }, () => coldRecording(50_000)));
    const kept = await coldRecording(200_000);
    const allQueued = until(
      'leavers queued',
      slots,
      (x) => x.admitted === 2 && x.queued === queuedBlockers + PER_PHASE + 1,
    );
    const logsBeforeQueue = server.logs.length;
    const queuedLeavers = abandoned.map((r) =>
      leaver(get(r.call_sid), () => allQueued.then(() => undefined)),
    );
    const keptReads = [whole(kept.call_sid), whole(kept.call_sid)];
    const queuedForAdmission = await Promise.all(queuedLeavers);
    await until('abandoned downloads left the queue', slots, (x) => x.queued === queuedBlockers + 1);
    const leftQueue = server.logs
      .slice(logsBeforeQueue)
      .filter(
        (l) => l.event === 'download_failed' && l.phase === 'admit' && l.code === 'RECGATE_CLIENT_CLOSED',
      );
    assert.equal(leftQueue.length, PER_PHASE, 'each abandoned download logged leaving the queue');
    proxy.releaseAll();
    for (const hash of await Promise.all(keptReads)) assert.equal(hash, kept.sha256);
    for (const b of blockers) assert.equal(await b.read, b.sha256);
    assert.ok(
      queuedForAdmission.every((n) => n === 0),
      `${queuedForAdmission}`,
    );
    const stats = emulator.stats();
    for (const r of abandoned)
      assert.equal(stats.media_requests[r.recording_sid!] ?? 0, 0, 'an abandoned download fetched');
    assert.equal(stats.media_requests[kept.recording_sid!], 1);
    for (const b of blockers) assert.equal(stats.media_requests[b.recordingSid], 1);

    // During a ranged cold request far ahead of the download, served by a seek-ahead slice.
    const ranged = await coldRecording(RANGED_SIZE);
    const logsBeforeRanged = server.logs.length;
    const rangedHead = `GET /api/calls/${ranged.call_sid}/download HTTP/1.1\r\nHost: x\r\nRange: bytes=${RANGE.start}-${RANGE.end}\r\nAuthorization: Bearer ${token}\r\n\r\n`;
    const rangedLeavers = Array.from({ length: PER_PHASE }, () =>
      leaver(rangedHead, midStream(MID / 2), MID / 2),
    );
    const rangedStayer = body(ranged.call_sid, RANGE);
    const rangedWhole = body(ranged.call_sid);
    const rangedCold = await Promise.all(rangedLeavers);
    const full = await rangedWhole;
    assert.equal(sha256(full), ranged.sha256);
    assert.ok(
      (await rangedStayer).equals(full.subarray(RANGE.start, RANGE.end + 1)),
      'the ranged stayer’s bytes',
    );
    assert.ok(
      rangedCold.every((n) => n >= MID / 2 && n < RANGE.end - RANGE.start + 1),
      `${rangedCold}`,
    );
    // One full download; every other media request is a slice, each logged once when it ends (the worker's
    // line may still be on its way here).
    const sliceEvents = async () =>
      server.logs
        .slice(logsBeforeRanged)
        .filter(
          (l) =>
            l.callSid === ranged.call_sid && (l.event === 'seek_ahead' || l.event === 'seek_ahead_discarded'),
        );
    const rangedEvents = await until(
      'a log line for each slice request',
      sliceEvents,
      (events) => emulator.stats().media_requests[ranged.recording_sid!] === 1 + events.length,
    );
    assert.ok(
      rangedEvents.some((l) => l.event === 'seek_ahead'),
      `no seek-ahead slice served the ranged requests (events: ${server.logs
        .slice(logsBeforeRanged)
        .filter((l) => l.callSid === ranged.call_sid)
        .map((l) => l.event)})`,
    );
    const after2 = emulator.stats();
    assert.ok(
      after2.media_bytes[ranged.recording_sid!]! <= 1.1 * RANGED_SIZE,
      `upstream bytes ${after2.media_bytes[ranged.recording_sid!]} ≤ 1.1 × ${RANGED_SIZE}`,
    );

    // Settled: every socket of the clients that left, and every partial, lock or read handle of the
    // download, is closed. What stays is what stayed before (the call log, the upstream pool) plus, by
    // design, at most one descriptor per finished recording: the bounded cache of open finished files
    // (src/recordings/store/final-files.ts) that serves warm requests without an open per request.
    const leaked = (targets: string[], n: number) => {
      const others = counted(targets, n).length;
      const othersBefore = countedBefore[n]!;
      const files = targets.filter(isRecording);
      const finals = files.filter((x) => /\/CA[0-9a-f]{32}\.mp3$/.test(x));
      return (
        others > othersBefore || finals.length !== files.length || new Set(finals).size !== finals.length
      );
    };
    let after = pids.map((pid) => fdTargets(pid));
    for (let i = 0; after.some(leaked); i++) {
      assert.ok(
        i < 100,
        `worker descriptors: ${JSON.stringify(after)}, before: ${JSON.stringify(beforeTargets)}`,
      );
      await sleep(50);
      after = pids.map((pid) => fdTargets(pid));
    }
    t.diagnostic(`phases and settling took ${Date.now() - started} ms`);
    const count = (all: string[][], filter: (x: string) => boolean) =>
      all.map((targets) => targets.filter(filter).length).join('/');
    t.diagnostic(
      `worker descriptors after ${6 * PER_PHASE} disconnects and ${10 + blockers.length} whole or ranged reads: ${after.map((a, n) => counted(a, n).length).join('/')} besides recordings and upstream connections (${countedBefore.join('/')} before), finished recordings held open ${count(after, isRecording)}`,
    );
  });
});
