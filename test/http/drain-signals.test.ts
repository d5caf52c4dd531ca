/**
 * A second signal during a drain, under `recgate serve --workers 2`: a repeated SIGTERM (as a supervisor
 * sends to the whole group) is ignored, and a second SIGINT (Ctrl-C again) cuts the drain short in the
 * primary and both workers, which still close cleanly: exit 0, streams cut with an error, no final file.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { fresh, registerRecording, startStream } from '../helpers/drain-clients.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';

/** About 8 s of download at 250 kB/s: still running when the second signal comes. */
const LONG_BYTES = 2_000_000;
/** For the exit after the hurry: closing the call log, cancelling downloads, a loaded machine. */
const EXIT_MARGIN_MS = 5000;

describe('a second signal during a drain', () => {
  let emulator: Emulator;
  let token: string;
  const dirs: string[] = [];

  before(async () => {
    emulator = await startEmulator({ port: 0, logger: false, bandwidth: 250_000 });
    token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
  });
  after(async () => {
    await emulator?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('--workers 2: a repeated SIGTERM is ignored, a second SIGINT cuts the drain short', {
    timeout: 60_000,
  }, async (t) => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-drain-'));
    dirs.push(dataDir);
    // Waits far longer than the test: only a hurry can end them in time.
    const server = await startServeProcess({
      workers: 2,
      dataDir,
      emulator,
      extraArgs: ['--drain-delay', '60s', '--shutdown-timeout', '60s'],
    });
    const agent = new Agent({ connections: 8, pipelining: 0 });
    try {
      const long = await registerRecording(emulator, server.url, LONG_BYTES);
      const streams = await Promise.all(
        Array.from({ length: 4 }, () => startStream(server.url, long.call_sid, token, agent)),
      );
      const exited = once(server.child, 'exit');
      server.child.kill('SIGTERM');
      while ((await fresh(server.url, '/readyz')).status !== 503) await sleep(20);
      server.child.kill('SIGTERM');
      await sleep(300);
      assert.equal(
        (await fresh(server.url, '/healthz')).status,
        200,
        'still listening: the repeat was ignored',
      );

      const hurried = performance.now();
      server.child.kill('SIGINT');
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0);
      const exitMs = performance.now() - hurried;
      assert.ok(exitMs < EXIT_MARGIN_MS, `exited ${Math.round(exitMs)} ms after the second signal`);
      t.diagnostic(`exit 0 ${Math.round(exitMs)} ms after the SIGINT (waits of 60 s + 60 s left)`);
      while (streams.some((s) => s.result === undefined)) await sleep(10);
      for (const s of streams) {
        assert.ok(s.result!.error !== undefined && s.received < LONG_BYTES, 'cut, not ended short');
      }
      const events = server.logs.map((l) => l.event);
      assert.ok(events.includes('signal_ignored'));
      assert.equal(events.filter((e) => e === 'shutdown_hurried').length, 3, 'the primary and both workers');
      const names = await readdir(path.join(dataDir, 'recordings'));
      assert.ok(!names.includes(`${long.call_sid}.mp3`), `left: ${names.join(' ')}`);
    } finally {
      await server.stop();
      await agent.close();
    }
  });
});
