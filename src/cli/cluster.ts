/**
 * `recgate serve --workers N`: the node:cluster primary that forks and restarts the workers, and both sides
 * of the messages they exchange over the cluster's IPC channel: `recgate:metrics-req` /
 * `recgate:metrics-res`, a worker's /metrics asking the primary for every worker's metrics, aggregated.
 */
import cluster, { type Worker } from 'node:cluster';
import client from 'prom-client';
import type { Config } from '../config/config.js';
import type { Emulator } from '../emulator/index.js';
import type { MetricsSource } from '../http/routes/health.js';
import type { createLogger } from '../observability/logger.js';

export const WORKER_CONFIG_ENV = 'RECGATE_WORKER_CONFIG';
const METRICS_REQ = 'recgate:metrics-req';
const METRICS_RES = 'recgate:metrics-res';

export async function runPrimary(
  config: Config,
  logger: ReturnType<typeof createLogger>,
  hooks: {
    onListening(url: string): void;
    onShutdown(fn: () => Promise<void>): void;
  },
  emulator?: Emulator,
) {
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
      hooks.onListening(`http://${address.address ?? config.host}:${address.port}`);
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

  hooks.onShutdown(async () => {
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
export function clusterMetricsSource(): MetricsSource {
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
