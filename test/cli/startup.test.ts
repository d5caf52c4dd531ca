/**
 * `recgate serve` start-up failures are clear and final: one line on stderr that names what failed and
 * why, a non-zero exit, and no hang, in one process and under --workers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { mountExt4, mountReadOnly } from '../helpers/read-only-mount.js';
import { recgateArgs } from '../helpers/recgate-command.js';
import { freePort } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';

/** Long enough for a slow start on a busy machine; a hang shows as `code: null`. */
const HANG_MS = 30_000;
/** The crash-loop run: a dozen worker start-ups, each a few seconds on a busy 2-core machine. */
const CRASH_LOOP_HANG_MS = 90_000;

const root = await mkdtemp(path.join(tmpdir(), 'recgate-startup-'));
after(() => rm(root, { recursive: true, force: true }));

interface Run {
  /** The limit the run was stopped at. */
  hangMs: number;
  code: number | null;
  stderr: string;
  logs: Array<Record<string, unknown>>;
  ms: number;
}

/** Runs `recgate serve` to its end, or stops it (SIGTERM, then SIGKILL) after `hangMs`. */
async function serve(
  args: string[],
  options: {
    testControls?: boolean;
    env?: Record<string, string>;
    hangMs?: number;
    /** Stops the run (SIGTERM) as soon as a log line makes this true, instead of waiting for `hangMs`. */
    stopWhen?: (log: Record<string, unknown>) => boolean;
  } = {},
) {
  const hangMs = options.hangMs ?? HANG_MS;
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      ...recgateArgs({ testControls: options.testControls }),
      'serve',
      '--twilio-api-base',
      'http://127.0.0.1:1',
      ...args,
    ],
    {
      env: {
        ...process.env,
        RECGATE_JWT_SECRET: JWT_SECRET,
        TWILIO_ACCOUNT_SID: `AC${'0'.repeat(32)}`,
        TWILIO_AUTH_TOKEN: 'token',
        RECGATE_LOG_LEVEL: 'info',
        RECGATE_DRAIN_DELAY: '0',
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  let stopping = false;
  child.stdout.on('data', (c: Buffer) => {
    const from = stdout.lastIndexOf('\n') + 1;
    stdout += c.toString();
    if (options.stopWhen === undefined || stopping) return;
    const complete = stdout.slice(from, stdout.lastIndexOf('\n') + 1);
    for (const l of complete.split('\n')) {
      if (!l.startsWith('{') || !options.stopWhen(JSON.parse(l) as Record<string, unknown>)) continue;
      stopping = true;
      child.kill('SIGTERM');
      break;
    }
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const hang = setTimeout(() => {
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  }, hangMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(hang);
  const logs = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { hangMs, code, stderr, logs, ms: Date.now() - started } satisfies Run;
}

/** The run ended by itself, with exit code 1 and exactly `line` on stderr. */
function assertFailedWith(run: Run, line: string | RegExp) {
  assert.ok(run.ms < run.hangMs, `still running after ${run.hangMs} ms; stderr: ${run.stderr}`);
  assert.equal(run.code, 1, run.stderr);
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${run.stderr}`);
  if (typeof line === 'string') assert.equal(lines[0], line);
  else assert.match(lines[0]!, line);
}

describe('recgate serve start-up failures', () => {
  for (const workers of [1, 2]) {
    it(`a read-only data dir (--workers ${workers}): names the call log's file and the cause`, async (t) => {
      const dataDir = path.join(root, `ro-data-${workers}`);
      if (!mountReadOnly(t, dataDir)) return;
      const run = await serve(['--port', '0', '--workers', String(workers), '--data-dir', dataDir]);
      assertFailedWith(
        run,
        `recgate: cannot open the call log ${dataDir}/recgate.db: EROFS: read-only file system`,
      );
    });
  }

  for (const workers of [1, 2]) {
    it(`a read-only recordings dir (--workers ${workers}): the cache's message, before any worker is forked`, async (t) => {
      const dataDir = path.join(root, `ro-recordings-${workers}`);
      await mkdir(dataDir, { recursive: true });
      if (!mountReadOnly(t, path.join(dataDir, 'recordings'))) return;
      const run = await serve(['--port', '0', '--workers', String(workers), '--data-dir', dataDir]);
      assertFailedWith(
        run,
        new RegExp(
          `^recgate: The recordings directory ${dataDir}/recordings is not writable \\(EROFS\\) by uid \\d+; check the volume's mount and ownership$`,
        ),
      );
      assert.deepEqual(
        run.logs.filter((l) => typeof l.event === 'string' && l.event.startsWith('worker_')),
        [],
        'no worker was forked',
      );
    });
  }

  for (const workers of [1, 2]) {
    it(`a port already taken (--workers ${workers}): the worker's own message, once`, async (t) => {
      const port = await freePort();
      const taken = createServer().listen(port, '127.0.0.1');
      t.after(() => taken.close());
      const dataDir = path.join(root, `port-taken-${workers}`);
      const run = await serve(['--port', String(port), '--workers', String(workers), '--data-dir', dataDir]);
      assertFailedWith(run, new RegExp(`^recgate: .*EADDRINUSE.* 127\\.0\\.0\\.1:${port}$`));
      if (workers > 1) {
        // The primary printed what a worker sent over IPC: the workers themselves print nothing.
        const failed = run.logs.filter((l) => l.event === 'worker_start_failed');
        assert.equal(failed.length, 1, JSON.stringify(run.logs));
        assert.equal(`recgate: ${failed[0]!.reason}`, run.stderr.trimEnd());
      }
    });
  }

  for (const workers of [1, 2]) {
    it(`an unreadable --recording-keys-dir (--workers ${workers}): names the directory, before any worker is forked`, async () => {
      const dataDir = path.join(root, `no-keys-${workers}`);
      const keysDir = path.join(root, `missing-keys-${workers}`);
      const run = await serve([
        ...['--port', '0', '--workers', String(workers), '--data-dir', dataDir],
        ...['--recording-keys-dir', keysDir],
      ]);
      assertFailedWith(
        run,
        new RegExp(`^recgate: recording keys directory ${keysDir} cannot be read: ENOENT: .*$`),
      );
      assert.deepEqual(
        run.logs.filter((l) => typeof l.event === 'string' && l.event.startsWith('worker_')),
        [],
        'no worker was forked',
      );
    });
  }

  it('workers that start and then crash are restarted with a growing delay, until the primary gives up', async () => {
    const dataDir = path.join(root, 'crash-loop');
    const run = await serve(['--port', String(await freePort()), '--workers', '2', '--data-dir', dataDir], {
      testControls: true,
      hangMs: CRASH_LOOP_HANG_MS,
      env: {
        RECGATE_TEST_WORKER_DIES_AFTER_MS: '200',
        RECGATE_TEST_PRIMARY_OPTIONS: JSON.stringify({
          restartDelayMs: 50,
          maxRestartDelayMs: 80,
          maxCrashes: 3,
          crashWindowMs: 60_000,
        }),
      },
    });
    assertFailedWith(
      run,
      /^recgate: giving up: worker [12] of 2 exited 3 times within 60 s \(last: it was killed by SIGKILL\)$/,
    );
    const exits = run.logs.filter((l) => l.event === 'worker_exit');
    for (const slot of [1, 2]) {
      const delays = exits.filter((l) => l.slot === slot).map((l) => l.restartInMs);
      // Doubling from 50 ms, capped at 80. The slot that reached 3 exits first ended the run, maybe before
      // the other slot's second exit.
      assert.deepEqual(delays, [50, 80].slice(0, delays.length), `slot ${slot}: ${JSON.stringify(exits)}`);
      assert.ok(delays.length >= 1);
    }
    const gaveUp = run.logs.filter((l) => l.event === 'primary_gave_up');
    assert.equal(gaveUp.length, 1);
    assert.equal(gaveUp[0]!.exits, 3);
    // Every exit was of a worker that had started (listened), and restarted workers listened again.
    const listened = new Set(
      run.logs.filter((l) => String(l.msg).startsWith('Server listening')).map((l) => l.pid),
    );
    for (const l of [...exits, ...gaveUp])
      assert.ok(listened.has(l.workerPid), `${l.workerPid} never listened`);
    assert.ok(listened.size > exits.length, `${listened.size} workers listened, ${exits.length} restarts`);
    // And the primary left none behind.
    for (const pid of listened) {
      assert.throws(() => process.kill(Number(pid), 0), { code: 'ESRCH' }, `worker ${pid} still runs`);
    }
  });
});

describe('recgate serve start-up warnings', () => {
  for (const journal of [false, true]) {
    it(`${journal ? 'no warning for' : 'warns of'} a data dir on ext4 ${journal ? 'with' : 'without'} a journal`, async (t) => {
      const dataDir = path.join(root, `ext4-${journal ? 'journal' : 'no-journal'}`);
      if (!mountExt4(t, dataDir, { journal })) return;
      const run = await serve(['--port', String(await freePort()), '--data-dir', dataDir], {
        stopWhen: (l) => String(l.msg).startsWith('Server listening'),
      });
      // Stopped as soon as it listened, maybe before its signal handlers were in place: the exit says nothing.
      assert.ok(
        run.logs.some((l) => String(l.msg).startsWith('Server listening')),
        `the gateway started; stderr: ${run.stderr}`,
      );
      const warnings = run.logs.filter((l) => l.event === 'storage_slow_creates');
      if (journal) {
        assert.deepEqual(warnings, []);
        return;
      }
      assert.equal(warnings.length, 1, JSON.stringify(run.logs));
      assert.equal(warnings[0]!.level, 40, 'a warning');
      assert.equal(warnings[0]!.dir, path.join(dataDir, 'recordings'));
      assert.match(String(warnings[0]!.fileSystem), /^ext4 \(\/dev\/loop\d+, no journal\)$/);
      assert.match(
        String(warnings[0]!.msg),
        /is ext4 without a journal, where creating a file costs more CPU/,
      );
    });
  }
});
