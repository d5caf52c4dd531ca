/**
 * `recgate serve`: one process, or with `--workers N` a node:cluster primary and N workers sharing the port.
 * The workers are correct together because the recording cache's lock is a kernel file lock
 * (see src/recordings/lock/); the primary checks the data dir, forks, supervises and aggregates /metrics
 * (see ./cluster.ts).
 */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { JwtAuth } from '../auth/jwt.js';
import { openCallLog } from '../call-log/index.js';
import { type Config, recordingsDir } from '../config/config.js';
import type { Emulator } from '../emulator/index.js';
import { describeFileSystem, fileSystemOf, slowCreatesNote } from '../io/file-system.js';
import { createLogger } from '../observability/logger.js';
import { DirectoryRecordingKeys } from '../recordings/decrypt/keys-dir.js';
import { ensureWritableDir } from '../recordings/index.js';
import { type Gateway, startGateway } from '../server.js';
import {
  clusterMetricsSource,
  onStopRequest,
  type PrimaryOptions,
  reportStartFailure,
  runPrimary,
  WORKER_CONFIG_ENV,
} from './cluster.js';
import { registerDemoCalls } from './demo.js';

export interface ServeOptions {
  /** The `--workers` primary's restart and stop settings; each has its own default. */
  primary?: PrimaryOptions;
}

/**
 * Runs the gateway. With one worker, resolves once it listens; with several, settles only when the primary
 * gives up (it rejects with the reason). A start-up failure rejects with a message that names what failed
 * and why; the CLI prints it and exits 1.
 */
export async function runServe(config: Config, options: ServeOptions = {}): Promise<void> {
  if (cluster.isWorker) return runWorker();
  const logger = createLogger({ level: config.logLevel });
  let emulator: Emulator | undefined;
  if (config.demo) {
    ({ config, emulator } = await prepareDemo(config));
  }
  await preflight(config);
  warnOfFileSystem(recordingsDir(config), logger);

  if (config.workers === 1) {
    const gateway = await startGateway(config, { logger });
    onReloadKeys(config, logger, () => gateway.reloadRecordingKeys());
    announce(config, gateway.url, logger);
    onShutdown(logger, async (hurry) => {
      await gateway.drain(drainOptions(config, hurry));
      await emulator?.close();
    });
    return;
  }
  const primary = runPrimary(
    config,
    { logger, onListening: (url) => announce(config, url, logger) },
    { stopTimeoutMs: stopDeadlineMs(config), ...options.primary },
  );
  // Each worker reads the keys again itself.
  onReloadKeys(config, logger, () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
  });
  onShutdown(logger, async (hurry) => {
    hurry.addEventListener('abort', () => primary.hurry(), { once: true });
    await primary.stop();
    await emulator?.close();
  });
  try {
    await primary.gaveUp;
  } finally {
    await emulator?.close();
  }
}

/**
 * What every worker would check at start, checked once before any is forked, with the same messages: a
 * broken database or volume then stops the start with one clear line instead of N failing workers.
 */
async function preflight(config: Config): Promise<void> {
  // Also migrates, once, before any worker opens the call log.
  await (await openCallLog(config.databaseUrl, config.dataDir)).close();
  ensureWritableDir(recordingsDir(config));
  // One gateway reads the keys first thing itself (openGatewayRuntime), with the same message.
  if (config.workers > 1 && config.recordingKeysDir !== undefined) {
    DirectoryRecordingKeys.open({ dir: config.recordingKeysDir });
  }
}

/** Says once, at start, when the data dir's file system makes cold downloads cost more (see io/file-system.ts). */
function warnOfFileSystem(dir: string, logger: Logger): void {
  const fileSystem = fileSystemOf(dir);
  const note = slowCreatesNote(fileSystem);
  if (note === undefined) return;
  logger.warn({ event: 'storage_slow_creates', dir, fileSystem: describeFileSystem(fileSystem) }, note);
}

/**
 * SIGHUP reads `--recording-keys-dir` again (`reload`); a bad file is logged, naming it, and the keys loaded
 * before stay. Without the option SIGHUP keeps Node's default (the process ends), as before.
 */
function onReloadKeys(config: Config, logger: Logger, reload: () => void): void {
  if (config.recordingKeysDir === undefined) return;
  process.on('SIGHUP', () => {
    try {
      reload();
      logger.info({ event: 'recording_keys_reloaded' }, 'Recording keys read again');
    } catch (err) {
      logger.error(
        { err, event: 'recording_keys_reload_failed' },
        'Recording keys not reloaded; the previous ones stay',
      );
    }
  });
}

async function prepareDemo(config: Config): Promise<{ config: Config; emulator: Emulator }> {
  await mkdir(config.dataDir, { recursive: true });
  // Secrets persist in the data dir so that login links keep working across restarts of the demo.
  const secretsFile = path.join(config.dataDir, 'demo-secrets.json');
  let secrets: { jwtSecret: string; adminToken: string };
  try {
    secrets = JSON.parse(await readFile(secretsFile, 'utf8'));
  } catch {
    secrets = {
      jwtSecret: randomBytes(32).toString('base64url'),
      adminToken: randomBytes(24).toString('base64url'),
    };
    await writeFile(secretsFile, JSON.stringify(secrets), { mode: 0o600 });
  }
  // Loaded only for the demo: the emulator and its MP3 encoder have no place in a production gateway's memory.
  const { seedDemo, startEmulator } = await import('../emulator/index.js');
  const emulator = await startEmulator({ host: '127.0.0.1', port: 0, logger: false });
  const calls = await seedDemo(emulator);
  const demoConfig: Config = {
    ...config,
    jwtSecret: config.jwtSecret ?? secrets.jwtSecret,
    adminToken: config.adminToken ?? secrets.adminToken,
    twilioApiBase: emulator.url,
    twilioAccountSid: emulator.accountSid,
    twilioAuthToken: emulator.authToken,
    twilioApiKey: undefined,
    twilioApiSecret: undefined,
  };
  const callLog = await openCallLog(demoConfig.databaseUrl, demoConfig.dataDir);
  try {
    await registerDemoCalls(callLog, calls);
  } finally {
    await callLog.close();
  }
  return { config: demoConfig, emulator };
}

function announce(config: Config, url: string, logger: ReturnType<typeof createLogger>): void {
  logger.info(
    { event: 'listening', url, workers: config.workers, demo: config.demo },
    `recgate listening on ${url}`,
  );
  if (!config.demo || !config.jwtSecret) return;
  const jwt = new JwtAuth(config.jwtSecret);
  void Promise.all(['acme', 'globex'].map(async (b) => [b, await jwt.sign(b, 12 * 3600)] as const)).then(
    (links) => {
      const lines = [
        '',
        `recgate demo is running: ${url}/`,
        ...links.map(([b, t]) => `  log in as ${b.padEnd(7)} ${url}/#token=${t}`),
        `  admin token (RECGATE_ADMIN_TOKEN): ${config.adminToken}`,
        '',
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    },
  );
}

/**
 * How long the primary waits for a draining worker before SIGKILL: the worker's own drain delay and
 * shutdown timeout, plus a margin for closing the call log and cancelling downloads. A SIGKILL is still
 * safe (a killed download leaves only its generation files), but it is a last resort.
 */
const STOP_MARGIN_MS = 5000;

function stopDeadlineMs(config: Config): number {
  return config.drainDelayMs + config.shutdownTimeoutMs + STOP_MARGIN_MS;
}

function drainOptions(config: Config, hurry: AbortSignal) {
  return { drainDelayMs: config.drainDelayMs, shutdownTimeoutMs: config.shutdownTimeoutMs, hurry };
}

/**
 * Runs `fn` on the first SIGTERM or SIGINT, then exits 0 (1 if it failed). Later signals never start a
 * second stop: a repeated SIGTERM is ignored (supervisors such as systemd send it to every process of the
 * group, and the primary relays it to its workers), and a later SIGINT (Ctrl-C pressed again) aborts
 * `hurry`, which skips what is left of the drain delay and shutdown timeout. Either way the same close
 * runs, so no file is left half-visible; only SIGKILL stops without it, and that too is safe.
 * Returns the same trigger for other sources (the primary's `recgate:stop`).
 */
function onShutdown(
  logger: Logger,
  fn: (hurry: AbortSignal) => Promise<void>,
): (source: string, hurry: boolean) => void {
  const hurry = new AbortController();
  let started = false;
  const request = (source: string, hurryNow: boolean) => {
    if (hurryNow && !hurry.signal.aborted) {
      logger.info({ event: 'shutdown_hurried', source }, 'Cutting the drain short');
      hurry.abort();
    } else if (started) {
      logger.info({ event: 'signal_ignored', source }, 'Already stopping');
    }
    if (started) return;
    started = true;
    logger.info({ event: 'shutdown_started', source }, `Stopping (${source})`);
    fn(hurry.signal).then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`recgate: shutdown after ${source} failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  const handler = (signal: NodeJS.Signals) => request(signal, started && signal === 'SIGINT');
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return request;
}

async function runWorker(): Promise<void> {
  const raw = process.env[WORKER_CONFIG_ENV];
  if (!raw) throw new Error(`${WORKER_CONFIG_ENV} is missing in a worker`);
  const config = JSON.parse(raw) as Config;
  let gateway: Gateway;
  try {
    gateway = await startGateway(config, { metrics: clusterMetricsSource() });
  } catch (err) {
    await reportStartFailure(err);
    throw err;
  }
  const stop = onShutdown(gateway.logger, async (hurry) => {
    await gateway.drain(drainOptions(config, hurry));
  });
  onReloadKeys(config, gateway.logger, () => gateway.reloadRecordingKeys());
  onStopRequest((hurry) => stop('primary', hurry));
}
