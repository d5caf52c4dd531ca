/**
 * `recgate serve --workers N`: the node:cluster primary that forks, supervises and stops the workers, and
 * both sides of the messages they exchange over the cluster's IPC channel:
 * - `recgate:start-failed`, worker to primary: the worker's start-up failed, with the message to print;
 * - `recgate:metrics-req` / `recgate:metrics-res`: a worker's /metrics asks the primary for every
 *   worker's metrics, aggregated;
 * - `recgate:stop`, primary to worker: stop now and hurry (skip the drain delay and shutdown timeout), sent
 *   when the primary gives up or on a second interrupt. A plain stop is a SIGTERM, as from a supervisor.
 *
 * The primary's rules, in the order it applies them when a worker exits:
 * 1. while stopping (a signal, or giving up), exits are expected;
 * 2. a worker of the first start that exits before it listened makes the whole start fail: the primary
 *    stops the other workers and fails with that worker's message (the same config would fail every
 *    replacement too, and nothing is being served yet);
 * 3. any other exit (a crash after listening, or a replacement that could not start) is restarted under
 *    a {@link RestartPolicy}: an exponential, capped delay, and giving up on a crash loop.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { Config } from '../config/config.js';
import type { MetricsSource } from '../http/routes/health.js';
import { RestartPolicy, type RestartPolicyOptions } from './restart-policy.js';

export const WORKER_CONFIG_ENV = 'RECGATE_WORKER_CONFIG';
const START_FAILED = 'recgate:start-failed';
const METRICS_REQ = 'recgate:metrics-req';
const METRICS_RES = 'recgate:metrics-res';
const STOP = 'recgate:stop';

export interface PrimaryOptions extends RestartPolicyOptions {
  /**
   * How long stopping waits for a worker to exit after SIGTERM before it sends SIGKILL, in ms. `recgate
   * serve` sets it to the drain delay plus the shutdown timeout plus 5 s. @default 10000
   */
  stopTimeoutMs?: number;
}

export interface PrimaryHooks {
  logger: Logger;
  /** Called once, with the URL, when the first worker listens. */
  onListening(url: string): void;
}

export interface Primary {
  /**
   * Stops every worker: SIGTERM (each worker drains, see src/lifecycle/drain.ts), then SIGKILL after
   * `stopTimeoutMs`. Idempotent.
   */
  stop(): Promise<void>;
  /** Relays a second interrupt: every live worker cuts its drain short (`recgate:stop`). */
  hurry(): void;
  /**
   * Never resolves. Rejects, once every worker has stopped, with an Error whose message says why the
   * primary gave up: a first-start worker's own start-up message, or the crash loop it saw.
   */
  readonly gaveUp: Promise<never>;
}

interface WorkerState {
  slot: number;
  /** Forked by the first start, not as a replacement. */
  initial: boolean;
  listening: boolean;
  /** The message the worker sent when its start-up failed. */
  startFailure?: string;
}

/**
 * Forks `config.workers` workers (each re-runs the CLI and finds its config in {@link WORKER_CONFIG_ENV})
 * and supervises them as the module comment describes. Throws TypeError for a bad option.
 */
export function runPrimary(config: Config, hooks: PrimaryHooks, options: PrimaryOptions = {}): Primary {
  const policy = new RestartPolicy(options);
  const stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
  if (!Number.isSafeInteger(stopTimeoutMs) || stopTimeoutMs < 0) {
    throw new TypeError('options.stopTimeoutMs must be an integer >= 0');
  }
  const { logger } = hooks;
  const aggregator = new client.AggregatorRegistry();
  const env = { [WORKER_CONFIG_ENV]: JSON.stringify(config) };
  const restartTimers = new Set<NodeJS.Timeout>();
  let stopping: Promise<void> | undefined;
  let announced = false;
  let giveUp!: (err: Error) => void;
  const gaveUp = new Promise<never>((_, reject) => {
    giveUp = reject;
  });

  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
  const hurry = (): void => {
    for (const w of live()) sendTo(w, { type: STOP, hurry: true }, logger);
  };
  const stopAll = (hurried: boolean): Promise<void> => {
    stopping ??= (async () => {
      for (const timer of restartTimers) clearTimeout(timer);
      await Promise.all(live().map((w) => stopWorker(w, stopTimeoutMs, hurried, logger)));
    })();
    return stopping;
  };
  const stop = () => stopAll(false);

  const fail = (message: string, fields: Record<string, unknown>) => {
    if (stopping) return;
    logger.error({ event: 'primary_gave_up', reason: message, ...fields }, 'stopping every worker');
    // Nothing is worth draining for: a first start that failed, or a crash loop.
    void stopAll(true).then(() => giveUp(new Error(message)));
  };

  const onExit = (worker: Worker, state: WorkerState, code: number | null, signal: string | null) => {
    if (stopping) return;
    const pid = worker.process.pid;
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    if (state.initial && !state.listening) {
      fail(state.startFailure ?? `worker ${state.slot} ${how} before it listened`, {
        event: 'worker_start_failed',
        workerPid: pid,
        slot: state.slot,
        code,
        signal,
      });
      return;
    }
    const decision = policy.onExit(state.slot, Date.now());
    const last = state.startFailure ?? `it ${how}`;
    if (!decision.restart) {
      const windowS = policy.options.crashWindowMs / 1000;
      fail(
        `giving up: worker ${state.slot} of ${config.workers} exited ${decision.exits} times within ${windowS} s (last: ${last})`,
        { workerPid: pid, slot: state.slot, code, signal, exits: decision.exits },
      );
      return;
    }
    logger.warn(
      {
        event: 'worker_exit',
        workerPid: pid,
        slot: state.slot,
        code,
        signal,
        reason: state.startFailure,
        exits: decision.exits,
        restartInMs: decision.delayMs,
      },
      'worker died; starting another',
    );
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      if (!stopping) fork(state.slot, false);
    }, decision.delayMs);
    restartTimers.add(timer);
  };

  const fork = (slot: number, initial: boolean): void => {
    const worker = cluster.fork(env);
    const state: WorkerState = { slot, initial, listening: false };
    // The Worker relays its process's 'error' events: a failed signal or send. Unheard, one would end the
    // primary and, with it, every worker; the exit that usually follows is handled below.
    worker.on('error', (err: Error) =>
      logger.warn({ event: 'worker_error', workerPid: worker.process.pid, slot, err }, 'worker error'),
    );
    worker.on('message', (msg: { type?: string; id?: number; message?: unknown }) => {
      if (msg?.type === START_FAILED) state.startFailure = String(msg.message);
      if (msg?.type !== METRICS_REQ) return;
      aggregator.clusterMetrics().then(
        (text) => sendTo(worker, { type: METRICS_RES, id: msg.id, text }, logger),
        (err: Error) => sendTo(worker, { type: METRICS_RES, id: msg.id, error: err.message }, logger),
      );
    });
    worker.on('listening', (address) => {
      state.listening = true;
      if (announced) return;
      announced = true;
      hooks.onListening(`http://${address.address ?? config.host}:${address.port}`);
    });
    worker.on('exit', (code: number | null, signal: string | null) => {
      // 'exit' may come before the last IPC messages are read; the channel's end ('disconnect') comes
      // after them, so the worker's start-up message and 'listening' are known by then.
      if (worker.isConnected()) worker.once('disconnect', () => onExit(worker, state, code, signal));
      else onExit(worker, state, code, signal);
    });
  };

  for (let slot = 1; slot <= config.workers; slot++) fork(slot, true);
  return { stop, gaveUp, hurry };
}

/**
 * Sends `msg` to a worker whose channel is open. A worker can die between that check and the write: its end
 * of the channel is closed before the primary has read the exit, and the write fails with EPIPE. With the
 * callback that is a debug line here (the exit follows and is handled as any other), not an 'error' event.
 */
function sendTo(worker: Worker, msg: { type: string; [field: string]: unknown }, logger: Logger): void {
  if (!worker.isConnected()) return;
  worker.send(msg, (err: Error | null) => {
    if (err) {
      logger.debug(
        { event: 'worker_send_failed', workerPid: worker.process.pid, type: msg.type, err },
        'send failed',
      );
    }
  });
}

function stopWorker(worker: Worker, timeoutMs: number, hurried: boolean, logger: Logger): Promise<void> {
  const proc = worker.process;
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    // Not worker.kill(): that first disconnects the worker's IPC channel (and has it close its servers on
    // Node's schedule), while a draining worker still needs the channel, for /metrics and for a later
    // recgate:stop. The SIGTERM also ends a worker still starting, which has no handler yet for either; a
    // worker that hears both stops once, hurried, whichever comes first.
    if (hurried) sendTo(worker, { type: STOP, hurry: true }, logger);
    proc.kill('SIGTERM');
  });
}

/**
 * In a worker whose start-up failed: hands the message to the primary and exits 1. The primary prints it
 * once (workers print nothing) and stops every worker if this was the first start; for a replacement it is
 * the exit's reason. Returns only when there is no primary to tell (its channel is gone), and the caller
 * then throws as a single process would.
 */
export async function reportStartFailure(err: unknown): Promise<void> {
  const send = process.send?.bind(process);
  if (!send || !process.connected) return;
  const message = err instanceof Error ? err.message : String(err);
  const sent = await new Promise<boolean>((resolve) => {
    send({ type: START_FAILED, message }, undefined, undefined, (e: Error | null) => resolve(!e));
  });
  if (sent) process.exit(1);
}

/** In a worker: calls `handler` when the primary sends `recgate:stop`. */
export function onStopRequest(handler: (hurry: boolean) => void): void {
  process.on('message', (msg: { type?: string; hurry?: boolean }) => {
    if (msg?.type === STOP) handler(msg.hurry === true);
  });
}

/** /metrics in a worker asks the primary, which gathers every worker's registry. */
export function clusterMetricsSource(): MetricsSource {
  // Constructing one is what makes prom-client answer the primary's requests for this worker's metrics;
  // without it the primary's aggregation waits for every worker in vain and /metrics times out.
  new client.AggregatorRegistry();
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
        // With a callback, a channel that is already closed (the primary is gone, and this worker is about to
        // follow) fails this request, not the process with an unheard 'error' event.
        process.send?.({ type: METRICS_REQ, id }, undefined, undefined, (err: Error | null) => {
          if (!err) return;
          pending.delete(id);
          clearTimeout(timer);
          reject(err);
        });
      }),
  };
}
