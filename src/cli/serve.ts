/**
 * `recgate serve`: one process, or with `--workers N` a node:cluster primary and N workers sharing the port.
 * The workers are correct together because the recording cache's lock is a kernel file lock
 * (see src/recordings/lock/); the primary only forks, restarts, and aggregates /metrics.
 */
import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import client from 'prom-client';
import { JwtAuth } from '../auth/jwt.js';
import { openCallLog } from '../call-log/index.js';
import type { Config } from '../config/config.js';
import type { Emulator } from '../emulator/index.js';
import type { MetricsSource } from '../http/routes/health.js';
import { createLogger } from '../observability/logger.js';
import { type Gateway, startGateway } from '../server.js';
import { registerDemoCalls } from './demo.js';

const WORKER_CONFIG_ENV = 'RECGATE_WORKER_CONFIG';
const METRICS_REQ = 'recgate:metrics-req';
const METRICS_RES = 'recgate:metrics-res';

export async function runServe(config: Config): Promise<void> {
  if (cluster.isWorker) return runWorker();
  const logger = createLogger({ level: config.logLevel });
  let emulator: Emulator | undefined;
  if (config.demo) {
    ({ config, emulator } = await prepareDemo(config));
  }
  // Migrate once before any worker opens the call log.
  await (await openCallLog(config.databaseUrl, config.dataDir)).close();

  if (config.workers === 1) {
    const gateway = await startGateway(config, { logger });
    announce(config, gateway.url, logger);
    onShutdown(async () => {
      await gateway.close();
      await emulator?.close();
    });
    return;
  }
  await runPrimary(config, logger, emulator);
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

function onShutdown(fn: () => Promise<void>): void {
  let done = false;
  const handler = (signal: NodeJS.Signals) => {
    if (done) return;
    done = true;
    fn().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`recgate: shutdown after ${signal} failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

async function runPrimary(config: Config, logger: ReturnType<typeof createLogger>, emulator?: Emulator) {
  const aggregator = new client.AggregatorRegistry();
  const env = { [WORKER_CONFIG_ENV]: JSON.stringify(config) };
  let stopping = false;
  const restarts: number[] = [];
  let announced = false;

  const fork = (): Worker => {
    const worker = cluster.fork(env);
    worker.on('message', (msg: { type?: string; id?: number }) => {
      if (msg?.type !== METRICS_REQ) return;
      aggregator.clusterMetrics().then(
        (text) => worker.isConnected() && worker.send({ type: METRICS_RES, id: msg.id, text }),
        (err: Error) =>
          worker.isConnected() && worker.send({ type: METRICS_RES, id: msg.id, error: err.message }),
      );
    });
    worker.on('listening', (address) => {
      if (announced) return;
      announced = true;
      announce(config, `http://${address.address ?? config.host}:${address.port}`, logger);
    });
    return worker;
  };

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    const now = Date.now();
    restarts.push(now);
    while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
    logger.warn(
      { event: 'worker_exit', pid: worker.process.pid, code, signal },
      'worker died; starting another',
    );
    // A crash loop gets a pause, not a tight fork storm.
    setTimeout(fork, restarts.length > config.workers * 3 ? 5000 : 0);
  });

  for (let i = 0; i < config.workers; i++) fork();

  onShutdown(async () => {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => w.kill('SIGKILL'), 10_000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            w.kill('SIGTERM');
          }),
      ),
    );
    await emulator?.close();
  });
}

/** /metrics in a worker asks the primary, which gathers every worker's registry. */
function clusterMetricsSource(): MetricsSource {
  let next = 0;
  const pending = new Map<number, { resolve: (t: string) => void; reject: (e: Error) => void }>();
  process.on('message', (msg: { type?: string; id?: number; text?: string; error?: string }) => {
    if (msg?.type !== METRICS_RES || msg.id === undefined) return;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error !== undefined) p.reject(new Error(msg.error));
    else p.resolve(msg.text ?? '');
  });
  return {
    contentType: client.register.contentType,
    text: () =>
      new Promise<string>((resolve, reject) => {
        const id = next++;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error('metrics aggregation timed out'));
        }, 5000);
        pending.set(id, {
          resolve: (t) => {
            clearTimeout(timer);
            resolve(t);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        process.send?.({ type: METRICS_REQ, id });
      }),
  };
}

async function runWorker(): Promise<void> {
  const raw = process.env[WORKER_CONFIG_ENV];
  if (!raw) throw new Error(`${WORKER_CONFIG_ENV} is missing in a worker`);
  const config = JSON.parse(raw) as Config;
  const gateway: Gateway = await startGateway(config, { metrics: clusterMetricsSource() });
  onShutdown(() => gateway.close());
}
