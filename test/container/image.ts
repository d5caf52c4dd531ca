/**
 * `npm run test:container`: builds the Dockerfile with podman on a base image assembled here (see
 * base-image.ts) and runs it as a user would, against `recgate emulator` on the host:
 *
 * - a recording played through the container has the emulator's bytes (sha256);
 * - the gateway runs as the image's user, not root, and is PID 1 itself (so SIGTERM reaches Node);
 * - the image's HEALTHCHECK passes;
 * - SIGTERM ends it with exit code 0 within the drain deadline;
 * - a new container on the same named volume serves the recording from the volume: the emulator still
 *   counts one media request;
 * - a data dir it cannot write stops it at once with a message naming the uid, and started as root on
 *   the same directory it takes the directory over and drops to its user.
 *
 * Not in `npm test` (its name does not end in .test.ts): the first run takes minutes. It skips, saying
 * why, only where podman cannot run (not root, no podman), and never in CI.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { JwtAuth } from '../../src/auth/jwt.js';
import { imageFacts, ROOT } from '../deploy/helpers.js';
import { freePort, sha256 } from '../helpers/common.js';
import { ensureBaseImage } from './base-image.js';
import { descendantsOf, imageGraph, podman, podmanOk, podmanUnavailable } from './podman.js';

const IMAGE = 'localhost/recgate:test-container';
const JWT_SECRET = 'container-test-secret-'.padEnd(48, 'x');
const ADMIN_TOKEN = 'container-test-admin-token';
const ACCOUNT_SID = `AC${'c'.repeat(32)}`;
const AUTH_TOKEN = 'container-test-auth-token';
const DRAIN_DELAY_MS = 1000;
const SHUTDOWN_TIMEOUT_MS = 5000;

const log = (line: string) => process.stderr.write(`# ${line}\n`);

function ci(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

const unavailable = podmanUnavailable();

if (unavailable !== undefined) {
  test('container image', (t) => {
    if (ci()) throw new Error(`${unavailable}; CI is set, so the container test must run`);
    t.skip(unavailable);
  });
} else {
  test('container image: built with podman, run on a named volume, played, restarted, stopped', async (t) => {
    const id = `${process.pid}-${Date.now().toString(36)}`;
    const containers: string[] = [];
    const volumes: string[] = [];
    const dirs: string[] = [];
    let emulator: ChildProcess | undefined;
    t.after(async () => {
      for (const c of containers) await podman(['rm', '--force', '--time', '0', c]);
      for (const v of volumes) await podman(['volume', 'rm', '--force', v]);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      if (emulator && emulator.exitCode === null) {
        emulator.kill('SIGTERM');
        await once(emulator, 'exit');
      }
    });

    let started = Date.now();
    const base = await ensureBaseImage(log);
    log(`base image ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    started = Date.now();
    const build = await podman(
      [
        'build',
        '--format',
        'docker',
        '--network',
        'host',
        '--build-arg',
        `BASE_IMAGE=${base}`,
        '-t',
        IMAGE,
        ROOT,
      ],
      { timeoutMs: 1_200_000 },
    );
    assert.equal(build.code, 0, `podman build failed:\n${(build.stdout + build.stderr).slice(-6000)}`);
    log(`image built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await removeStaleBuildImages(base, build.stdout + build.stderr);

    const emulatorPort = await freePort();
    emulator = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(ROOT, 'test/helpers/cli-entry.ts'),
        'emulator',
        '--port',
        String(emulatorPort),
        '--account-sid',
        ACCOUNT_SID,
        '--auth-token',
        AUTH_TOKEN,
      ],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] },
    );
    const emulatorUrl = `http://127.0.0.1:${emulatorPort}`;
    await waitFor(async () => (await fetch(`${emulatorUrl}/__emulator/stats`)).ok, 'the emulator');
    const recording = (await (
      await fetch(`${emulatorUrl}/__emulator/recordings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ duration_s: 30 }),
      })
    ).json()) as { call_sid: string; recording_sid: string; sha256: string; size: number };

    const volume = `recgate-test-${id}`;
    await podmanOk(['volume', 'create', volume]);
    volumes.push(volume);
    const dataDir = imageFacts().dataDir;

    /** Starts a gateway container on a free port; resolves to its name and URL once it is ready. */
    const startGateway = async (name: string, mount: string, extra: string[] = []) => {
      const port = await freePort();
      containers.push(name);
      await podmanOk([
        'run',
        '--detach',
        '--name',
        name,
        '--network',
        'host',
        // The HEALTHCHECK is run by hand below: podman's own timer needs systemd, which these machines lack.
        '--health-interval',
        'disable',
        '--volume',
        `${mount}:${dataDir}`,
        ...['--env', 'RECGATE_HOST=127.0.0.1', '--env', `RECGATE_PORT=${port}`],
        ...['--env', `RECGATE_JWT_SECRET=${JWT_SECRET}`, '--env', `RECGATE_ADMIN_TOKEN=${ADMIN_TOKEN}`],
        ...['--env', `TWILIO_API_BASE=${emulatorUrl}`, '--env', `TWILIO_ACCOUNT_SID=${ACCOUNT_SID}`],
        ...['--env', `TWILIO_AUTH_TOKEN=${AUTH_TOKEN}`],
        ...['--env', `RECGATE_DRAIN_DELAY=${DRAIN_DELAY_MS}ms`],
        ...['--env', `RECGATE_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT_MS}ms`],
        ...extra,
        IMAGE,
      ]);
      const url = `http://127.0.0.1:${port}`;
      await waitFor(async () => {
        const state = (await podmanOk(['inspect', '--format', '{{.State.Status}}', name])).trim();
        if (state === 'exited') {
          throw new Error(`${name} exited:\n${(await podman(['logs', name])).stderr.slice(-4000)}`);
        }
        return (await fetch(`${url}/readyz`)).status === 200;
      }, `${name} to be ready`);
      return { name, url };
    };

    // The token as the README's demo gets it: `recgate token` run from the image (no data dir involved).
    const token = (
      await podmanOk([
        'run',
        '--rm',
        '--network',
        'host',
        '--health-interval',
        'disable',
        '--env',
        `RECGATE_JWT_SECRET=${JWT_SECRET}`,
        IMAGE,
        'token',
        '--business',
        'acme',
      ])
    ).trim();
    assert.equal((await new JwtAuth(JWT_SECRET).verify(token)).businessId, 'acme');
    const play = async (url: string) => {
      const res = await fetch(`${url}/api/calls/${recording.call_sid}/download`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
      return sha256(Buffer.from(await res.arrayBuffer()));
    };
    const mediaRequests = async () => {
      const stats = (await (await fetch(`${emulatorUrl}/__emulator/stats`)).json()) as {
        media_requests: Record<string, number>;
      };
      return stats.media_requests[recording.recording_sid] ?? 0;
    };

    // 1. First container: register the call, play it (downloaded from the emulator once).
    const first = await startGateway(`recgate-test-${id}-a`, volume);
    const registered = await fetch(`${first.url}/api/admin/calls/${recording.call_sid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme', recording_sid: recording.recording_sid }),
    });
    assert.ok(registered.ok, `registering the call: ${registered.status}`);
    assert.equal(await play(first.url), recording.sha256, 'the bytes played are the emulator’s');
    assert.equal(await mediaRequests(), 1);

    // 2. Not root, and Node is PID 1 (the entrypoint exec'd it), so SIGTERM goes to recgate itself.
    const image = imageFacts();
    assert.equal((await podmanOk(['exec', first.name, 'id', '-u'])).trim(), String(image.uid));
    const status = await podmanOk(['exec', first.name, 'cat', '/proc/1/status']);
    assert.match(
      status,
      new RegExp(`^Uid:\\s+${image.uid}\\s+${image.uid}\\s`, 'm'),
      'PID 1 runs as the image user',
    );
    const cmdline = (await podmanOk(['exec', first.name, 'cat', '/proc/1/cmdline'])).split('\0');
    assert.ok(
      cmdline[0]?.endsWith('node') && cmdline.includes('serve'),
      `PID 1 is Node: ${cmdline.join(' ')}`,
    );

    // 3. The image's HEALTHCHECK.
    const health = await podman(['healthcheck', 'run', first.name]);
    assert.equal(health.code, 0, `healthcheck: ${health.stdout}${health.stderr}`);

    // 4. SIGTERM: a clean exit (0) within the drain deadline.
    await stopWithSigterm(first.name);

    // 5. A new container on the same volume: the recording comes from the volume.
    await podmanOk(['rm', first.name]);
    const second = await startGateway(`recgate-test-${id}-b`, volume);
    assert.equal(await play(second.url), recording.sha256);
    assert.equal(await mediaRequests(), 1, 'served from the volume: no second upstream request');
    await stopWithSigterm(second.name);

    // 6. A data dir the image user cannot write: a clear message at once. As root: fixed, then dropped.
    const rootOwned = mkdtempSync(join(tmpdir(), 'recgate-container-'));
    dirs.push(rootOwned);
    const refused = `recgate-test-${id}-refused`;
    containers.push(refused);
    const run = await podman([
      'run',
      '--name',
      refused,
      '--network',
      'host',
      '--health-interval',
      'disable',
      '--volume',
      `${rootOwned}:${dataDir}`,
      ...['--env', `RECGATE_JWT_SECRET=${JWT_SECRET}`],
      IMAGE,
    ]);
    assert.equal(run.code, 1, `exit code of a start on an unwritable data dir:\n${run.stderr}`);
    assert.match(run.stderr, new RegExp(`the data directory ${dataDir} is not writable by uid ${image.uid}`));
    assert.match(run.stderr, /start the container as root/);

    const asRoot = await startGateway(`recgate-test-${id}-root`, rootOwned, ['--user', '0']);
    assert.match(
      await podmanOk(['exec', asRoot.name, 'cat', '/proc/1/status']),
      new RegExp(`^Uid:\\s+${image.uid}\\s`, 'm'),
      'started as root, it runs recgate as the image user',
    );
    assert.equal(statSync(rootOwned).uid, image.uid, 'the data dir was given to the image user');
    await stopWithSigterm(asRoot.name);
  });
}

async function stopWithSigterm(name: string): Promise<void> {
  const started = Date.now();
  await podmanOk(['kill', '--signal', 'TERM', name]);
  const code = (await podmanOk(['wait', name])).trim();
  const elapsed = Date.now() - started;
  assert.equal(
    code,
    '0',
    `${name} exits 0 after SIGTERM:\n${(await podman(['logs', name])).stderr.slice(-3000)}`,
  );
  assert.ok(
    elapsed < DRAIN_DELAY_MS + SHUTDOWN_TIMEOUT_MS,
    `${name} stopped in ${elapsed} ms, within the drain deadline ${DRAIN_DELAY_MS + SHUTDOWN_TIMEOUT_MS} ms`,
  );
  const logs = await podman(['logs', name]);
  assert.match(logs.stdout + logs.stderr, /"event":"shutdown_started"[^\n]*"source":"SIGTERM"/);
  log(`${name}: SIGTERM to exit 0 in ${elapsed} ms`);
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof Error && / exited:\n/.test(err.message)) throw err;
      last = err;
    }
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last: ${String(last)})` : ''}`);
}

/**
 * Removes what earlier builds on the same base image left and this build no longer uses: untagged images
 * built on `base`, other than the steps of this build (`--> ID` in its output) and their ancestors.
 * Without it every source change leaves about 1 GB of stage images behind. (Images of earlier base images
 * go with their base: see base-image.ts.)
 */
async function removeStaleBuildImages(base: string, buildOutput: string): Promise<void> {
  const graph = await imageGraph();
  const baseId = [...graph].find(([, node]) => node.tags.includes(base))?.[0];
  if (baseId === undefined) return;
  const used = [...buildOutput.matchAll(/^--> (?:Using cache )?([0-9a-f]{8,64})\b/gm)].map((m) => m[1]!);
  const keep = new Set<string>();
  for (const [id, node] of graph) {
    if (node.tags.length === 0 && !used.some((u) => id.startsWith(u))) continue;
    for (let at: string | undefined = id; at !== undefined && !keep.has(at); at = graph.get(at)?.parent) {
      keep.add(at);
    }
  }
  const stale = descendantsOf(graph, baseId).filter((id) => !keep.has(id));
  if (stale.length > 0) {
    log(`removing ${stale.length} images of earlier builds`);
    await podman(['rmi', '--force', ...stale]);
  }
}
