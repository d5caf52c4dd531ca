/** Runs `recgate serve --workers N` in a child process (see recgate-command.ts) and reads its JSON logs. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { freePort } from './common.js';

export { freePort } from './common.js';

import type { PrimaryOptions } from '../../src/cli/cluster.js';
import { recgateArgs } from './recgate-command.js';
import { ADMIN_TOKEN, JWT_SECRET } from './stack.js';

export interface ServeProcess {
  url: string;
  child: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
  /**
   * Sends SIGKILL to the primary and every worker at once (the whole process group: start with
   * `processGroup: true`) and resolves once none of them is alive. For crash tests.
   */
  killAll(): Promise<void>;
}

export async function startServeProcess(options: {
  workers: number;
  dataDir: string;
  emulator: { url: string; accountSid: string; authToken: string };
  extraArgs?: string[];
  env?: Record<string, string>;
  /** The primary's restart settings (e.g. no giving up while a test kills workers on purpose). */
  primary?: PrimaryOptions;
  /** Runs the gateway in a process group of its own, so {@link ServeProcess.killAll} reaches its workers. */
  processGroup?: boolean;
}): Promise<ServeProcess> {
  const port = await freePort();
  const primaryEnv =
    options.primary === undefined ? {} : { RECGATE_TEST_PRIMARY_OPTIONS: JSON.stringify(options.primary) };
  const child = spawn(
    process.execPath,
    [
      ...recgateArgs({ testControls: options.primary !== undefined }),
      'serve',
      '--port',
      String(port),
      '--workers',
      String(options.workers),
      '--data-dir',
      options.dataDir,
      '--twilio-api-base',
      options.emulator.url,
      ...(options.extraArgs ?? []),
    ],
    {
      env: {
        ...process.env,
        RECGATE_JWT_SECRET: JWT_SECRET,
        RECGATE_ADMIN_TOKEN: ADMIN_TOKEN,
        TWILIO_ACCOUNT_SID: options.emulator.accountSid,
        TWILIO_AUTH_TOKEN: options.emulator.authToken,
        RECGATE_LOG_LEVEL: 'info',
        // Tests stop it often; a test of the drain passes its own --drain-delay.
        RECGATE_DRAIN_DELAY: '0',
        ...primaryEnv,
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: options.processGroup === true,
    },
  );
  const logs: Array<Record<string, unknown>> = [];
  let buffered = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.startsWith('{')) logs.push(JSON.parse(line));
      nl = buffered.indexOf('\n');
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`recgate serve exited (${child.exitCode}): ${stderr}`);
    if (Date.now() > deadline) throw new Error(`recgate serve did not come up: ${stderr}`);
    try {
      const res = await request(`${url}/readyz`);
      await res.body.dump();
      if (res.statusCode === 200 && workersUp(logs) >= options.workers) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    child,
    logs,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
    async killAll() {
      if (options.processGroup !== true) throw new Error('killAll needs processGroup: true');
      const pids = new Set<number>([child.pid!]);
      for (const line of logs) if (typeof line.pid === 'number') pids.add(line.pid);
      const exited = child.exitCode === null && child.signalCode === null ? once(child, 'exit') : undefined;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
      await exited;
      const deadline = Date.now() + 10_000;
      while ([...pids].some(alive)) {
        if (Date.now() > deadline) throw new Error(`processes ${[...pids].filter(alive)} outlived SIGKILL`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/** Whether `pid` runs (a zombie, dead but not yet reaped, does not). */
function alive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
  return !/^\d+ \(.*\) Z/.test(stat);
}

/** Distinct worker pids that logged Fastify's "Server listening" line. */
function workersUp(logs: Array<Record<string, unknown>>): number {
  return new Set(
    logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening')).map((l) => l.pid),
  ).size;
}
