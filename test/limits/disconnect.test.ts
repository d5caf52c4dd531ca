/**
 * Clients that disconnect at every phase of a download (issue 11, item 4), against
 * `recgate serve --workers 2`: before their headers are complete, while waiting for the lock or the size,
 * during a cold download's streaming, and during a cached file's streaming. The download still completes
 * for the clients that stay, byte for byte (sha256 against the emulator's), from one upstream request; and
 * once things settle the workers hold no more descriptors than before, none of them on a recording.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
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
  let server: ServeProcess;
  let dataDir: string;
  let token: string;
  let pids: number[];

  before(async () => {
    // 2 MB after 800 ms, at 2 MB/s: a wait for the size, then a second of streaming, to disconnect in.
    emulator = await startEmulator({ port: 0, logger: false, ttfbMs: 800, bandwidth: 2_000_000 });
    dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-disconnect-'));
    server = await startServeProcess({ workers: 2, dataDir, emulator });
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

  async function whole(callSid: string): Promise<string> {
    const res = await request(`${server.url}/api/calls/${callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
      reset: true,
    });
    assert.equal(res.statusCode, 200);
    return sha256(Buffer.from(await res.body.arrayBuffer()));
  }

  it('completes the download for the others, from one upstream request, and leaks no descriptor', async (t) => {
    // Warm up what each worker opens once (the call log, the upstream connection pool), then count.
    const warm = await coldRecording(50_000);
    for (let i = 0; i < 4; i++) assert.equal(await whole(warm.call_sid), warm.sha256);
    await sleep(500);
    const beforeTargets = pids.map((pid) => fdTargets(pid));
    const recordings = path.join(dataDir, 'recordings');
    const isRecording = (target: string) => target.startsWith(recordings);
    const emulatorPort = Number(new URL(emulator.url).port);
    // Counted: descriptors other than recordings (see below) and the upstream pool's connections to the
    // emulator, which come and go with its keep-alive.
    const counted = (targets: string[], n: number) => {
      const upstream = socketsTo(pids[n]!, emulatorPort);
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
    // The worker that did not download waited on the other's lock, the phase the "waiting" clients left in.
    assert.ok(
      server.logs.slice(logsBefore).some((l) => l.event === 'lock_wait'),
      'no worker waited for the download lock',
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
      `worker descriptors after ${4 * PER_PHASE} disconnects and 6 whole reads: ${after.map((a, n) => counted(a, n).length).join('/')} besides recordings and upstream connections (${countedBefore.join('/')} before), finished recordings held open ${count(after, isRecording)}`,
    );
  });
});
