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
import { fileURLToPath } from 'node:url';
import { mountReadOnly } from '../helpers/read-only-mount.js';
import { freePort } from '../helpers/serve-process.js';
import { JWT_SECRET } from '../helpers/stack.js';

const CLI_ENTRY = fileURLToPath(new URL('../helpers/cli-entry.ts', import.meta.url));
/** Long enough for a slow start on a busy machine; a hang shows as `code: null`. */
const HANG_MS = 30_000;

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
  options: { entry?: string; env?: Record<string, string>; hangMs?: number } = {},
) {
  const hangMs = options.hangMs ?? HANG_MS;
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      options.entry ?? CLI_ENTRY,
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
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
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
});
