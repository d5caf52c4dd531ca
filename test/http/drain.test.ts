/**
 * Drain, seen from outside: a real `recgate serve` (one process, then `--workers 2`) gets SIGTERM in the
 * middle of a cold stampede on two recordings, one short enough to finish within the shutdown timeout and
 * one far too long. /readyz turns 503 at once while the streams go on; new connections are refused after
 * the drain delay and not before; the short recording's clients get exact bodies; the long one's clients
 * see an error, never a clean end of a short body; the process exits 0 in time; no `{callSid}.mp3` is left
 * short; and a new gateway on the same data dir serves both recordings exactly, resuming the long one.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { loadConfig } from '../../src/config/config.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { startGateway } from '../../src/server.js';
import { sha256 } from '../helpers/common.js';
import { fresh, registerRecording, startStream } from '../helpers/drain-clients.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';

const DRAIN_DELAY_MS = 1000;
const SHUTDOWN_TIMEOUT_MS = 2000;
/** For the exit: closing the call log, cancelling downloads, a loaded machine. Not a speed claim. */
const EXIT_MARGIN_MS = 5000;
/** Media pace per upstream response. */
const BANDWIDTH = 250_000;
/** About 1 s of download: done well within drain delay + shutdown timeout (3 s). */
const SHORT_BYTES = 250_000;
/** About 8 s of download: cut by the shutdown timeout. */
const LONG_BYTES = 2_000_000;
const CLIENTS_PER_RECORDING = 8;

describe('drain on SIGTERM (recgate serve, mid-stampede)', () => {
  let emulator: Emulator;
  let token: string;
  const dirs: string[] = [];

  before(async () => {
    emulator = await startEmulator({ port: 0, logger: false, bandwidth: BANDWIDTH });
    // The first recording warms the MP3 encoder up (seconds), before any timing below.
    await emulator.createRecording({ bytes: 10_000 });
    token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
  });
  after(async () => {
    await emulator?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function getBody(url: string, callSid: string): Promise<Buffer> {
    const res = await request(`${url}/api/calls/${callSid}/download`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.statusCode, 200);
    return Buffer.from(await res.body.arrayBuffer());
  }

  for (const workers of [1, 2]) {
    it(`--workers ${workers}: readyz 503 at once, listener closed after the delay, short bodies never end clean`, {
      timeout: 90_000,
    }, async (t) => {
      const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-drain-'));
      dirs.push(dataDir);
      const server = await startServeProcess({
        workers,
        dataDir,
        emulator,
        extraArgs: ['--drain-delay', `${DRAIN_DELAY_MS}ms`, '--shutdown-timeout', `${SHUTDOWN_TIMEOUT_MS}ms`],
      });
      const agent = new Agent({ connections: 64, pipelining: 0 });
      try {
        const short = await registerRecording(emulator, server.url, SHORT_BYTES);
        const long = await registerRecording(emulator, server.url, LONG_BYTES);
        emulator.reset();

        const streams = await Promise.all([
          ...Array.from({ length: CLIENTS_PER_RECORDING }, () =>
            startStream(server.url, short.call_sid, token, agent),
          ),
          ...Array.from({ length: CLIENTS_PER_RECORDING }, () =>
            startStream(server.url, long.call_sid, token, agent),
          ),
        ]);
        for (const s of streams) assert.equal(s.status, 200);
        const shortStreams = streams.slice(0, CLIENTS_PER_RECORDING);
        const longStreams = streams.slice(CLIENTS_PER_RECORDING);
        // Mid-stampede: every response has started and none has ended.
        assert.ok(streams.every((s) => s.result === undefined));

        const exited = once(server.child, 'exit');
        const signalled = performance.now();
        server.child.kill('SIGTERM');

        // /readyz answers 503 on new connections, from every worker, while the listener is still open.
        let consecutive = 0;
        while (consecutive < 4) {
          const ready = await fresh(server.url, '/readyz');
          if (ready.status === 503) {
            assert.equal(JSON.parse(ready.body).error.code, 'RECGATE_SHUTTING_DOWN');
            consecutive++;
          } else {
            assert.equal(ready.status, 200);
            consecutive = 0;
          }
        }
        assert.ok(
          performance.now() - signalled < DRAIN_DELAY_MS,
          'readyz went 503 before the drain delay ended',
        );
        const readyMs = performance.now() - signalled;
        const longAtReady = longStreams.map((s) => s.received);
        const live = await fresh(server.url, '/healthz');
        assert.equal(live.status, 200, 'liveness stays 200 while draining');
        assert.equal(live.connection, 'close', 'keep-alive clients are sent elsewhere while draining');

        // New connections are refused once the drain delay is over, not before.
        let refusedAt: number | undefined;
        while (refusedAt === undefined) {
          try {
            await fresh(server.url, '/healthz');
            await sleep(50);
          } catch (err) {
            const code = (err as { code?: string }).code;
            const at = performance.now() - signalled;
            // A connection accepted just as the listener closes is reset with the idle ones: also after the delay.
            assert.ok(code === 'ECONNREFUSED' || code === 'ECONNRESET', String(err));
            assert.ok(at >= DRAIN_DELAY_MS, `${code} ${Math.round(at)} ms after SIGTERM`);
            if (code === 'ECONNREFUSED') refusedAt = at;
          }
        }

        const [code, signal] = (await exited) as [number | null, string | null];
        const exitMs = performance.now() - signalled;
        assert.equal(signal, null);
        assert.equal(code, 0);
        assert.ok(
          exitMs < DRAIN_DELAY_MS + SHUTDOWN_TIMEOUT_MS + EXIT_MARGIN_MS,
          `exited ${Math.round(exitMs)} ms after SIGTERM`,
        );
        while (streams.some((s) => s.result === undefined)) await sleep(10);

        // The short recording fit in the shutdown timeout: exact bodies.
        for (const s of shortStreams) {
          assert.equal(s.result!.error, undefined);
          assert.equal(s.result!.sha, short.sha256);
        }
        // The long one did not: each client was cut with an error, after receiving more while draining.
        for (const [i, s] of longStreams.entries()) {
          assert.equal(s.contentLength, LONG_BYTES);
          assert.ok(s.result!.error !== undefined, 'a cut response must not end cleanly');
          assert.ok(s.received < LONG_BYTES, `client ${i} received ${s.received} of ${LONG_BYTES}`);
          assert.ok(s.received > longAtReady[i]!, `client ${i}'s stream went on while draining`);
        }
        const logs = server.logs.filter((l) => l.event === 'connections_cut');
        // Each worker serving a long response cut it (under --workers, the kernel may give them all to one).
        assert.ok(logs.length >= 1 && logs.length <= workers, `${logs.length} connections_cut lines`);

        // Nothing half-visible: the short recording is whole, the long one has no final file.
        const recordings = path.join(dataDir, 'recordings');
        const names = await readdir(recordings);
        t.diagnostic(
          `readyz 503 (4 in a row) by ${Math.round(readyMs)} ms, refused at ${Math.round(refusedAt)} ms, ` +
            `exit 0 at ${Math.round(exitMs)} ms; long clients cut at ` +
            `${Math.min(...longStreams.map((s) => s.received))}-${Math.max(...longStreams.map((s) => s.received))} bytes; ` +
            `files: ${names.filter((n) => n.includes(long.call_sid)).join(' ')}`,
        );
        assert.equal(sha256(await readFile(path.join(recordings, `${short.call_sid}.mp3`))), short.sha256);
        assert.ok(!names.includes(`${long.call_sid}.mp3`), `left: ${names.join(' ')}`);
        assert.ok(
          names.some((n) => n.startsWith(`.${long.call_sid}.mp3.`) && n.endsWith('.part')),
          `the long download's generation is kept for a resume: ${names.join(' ')}`,
        );

        // A new gateway on the same data dir serves both exactly, resuming the long one.
        emulator.reset();
        emulator.setThrottle({ bandwidth: 0 });
        const next = await startGateway(
          loadConfig(
            {
              port: 0,
              dataDir,
              jwtSecret: JWT_SECRET,
              twilioApiBase: emulator.url,
              twilioAccountSid: emulator.accountSid,
              twilioAuthToken: emulator.authToken,
              logLevel: 'silent',
            },
            {},
          ),
        );
        try {
          assert.equal(sha256(await getBody(next.url, long.call_sid)), long.sha256);
          assert.equal(sha256(await getBody(next.url, short.call_sid)), short.sha256);
          const stats = emulator.stats();
          t.diagnostic(
            `after restart: ${stats.media_requests[long.recording_sid]} request(s), ` +
              `${stats.media_bytes[long.recording_sid]} bytes fetched for the long recording`,
          );
          assert.equal(stats.media_requests[short.recording_sid], undefined, 'the short one was a hit');
          assert.ok(
            (stats.media_bytes[long.recording_sid] ?? 0) < LONG_BYTES,
            `the long one resumed: ${stats.media_bytes[long.recording_sid]} bytes fetched again`,
          );
        } finally {
          await next.close();
          emulator.setThrottle({ bandwidth: BANDWIDTH });
        }
      } finally {
        await server.stop();
        await agent.close();
      }
    });
  }
});
