/**
 * Stopping a gateway without dropping what it serves, in named steps (`drainGateway`):
 * 1. `announce`: /readyz answers 503 `RECGATE_SHUTTING_DOWN` at once, and every response ends its
 *    connection (`Connection: close`), so load balancers and keep-alive clients move elsewhere;
 * 2. `wait`: requests are still served for the drain delay, the time load balancers need to notice;
 * 3. `closeListener`: no new connections, idle keep-alive connections closed, responses in flight go on;
 * 4. `cut`: those still running when the shutdown timeout ends have their connections destroyed, so a
 *    client sees a short read against Content-Length (an error), never a clean end of a short body;
 * 5. `release`: the rest of the gateway closes. Downloads still running are cancelled: they leave only
 *    their generation files, which another process or host resumes, never a short `{callSid}.mp3`; their
 *    locks are released.
 *
 * A hurry signal (a second SIGINT) ends the wait and the timeout at once; the steps stay the same, so a
 * hurried stop is as safe as a patient one, it only cuts more responses.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';

/**
 * Whether the process is stopping. Read by /readyz and by the hook that closes connections after each
 * response; set once by {@link drainGateway}.
 */
export class DrainState {
  #started = false;

  get started(): boolean {
    return this.#started;
  }

  begin(): void {
    this.#started = true;
  }
}

export interface DrainOptions {
  /** How long requests are still served after the announcement, in ms. */
  drainDelayMs: number;
  /** Once the listener is closed, how long responses in flight may take, in ms. */
  shutdownTimeoutMs: number;
  /** Aborting it ends the current wait at once (the drain delay, then the shutdown timeout). */
  hurry?: AbortSignal;
}

export interface DrainReport {
  /** Connections still open (responses in flight) when the shutdown timeout ended, destroyed then. */
  cut: number;
  /** Whether the hurry signal shortened a wait. */
  hurried: boolean;
}

export interface DrainTarget {
  app: FastifyInstance;
  state: DrainState;
  logger: Logger;
  /** Closes everything behind the HTTP server: the cache (cancelling downloads), upstream, locks, call log. */
  release(): Promise<void>;
}

/** How often idle connections are closed while responses finish (see `closeListener`). */
const IDLE_SWEEP_MS = 50;

/** Runs the steps of the module comment; resolves once everything is closed. Never rejects for a cut. */
export async function drainGateway(target: DrainTarget, options: DrainOptions): Promise<DrainReport> {
  const { logger } = target;
  const started = performance.now();
  const elapsedMs = () => Math.round(performance.now() - started);
  target.state.begin();
  logger.info(
    {
      event: 'drain_started',
      drainDelayMs: options.drainDelayMs,
      shutdownTimeoutMs: options.shutdownTimeoutMs,
    },
    'Draining: /readyz answers 503; the listener closes after the drain delay',
  );
  await wait(options.drainDelayMs, options.hurry);
  const closed = closeListener(target.app);
  logger.info({ event: 'listener_closed', ms: elapsedMs() }, 'Listener closed; responses in flight go on');
  const timeout = new AbortController();
  const finished = await Promise.race([
    closed.then(() => true),
    wait(options.shutdownTimeoutMs, anyOf(timeout.signal, options.hurry)).then(() => false),
  ]);
  timeout.abort();
  let cut = 0;
  if (!finished) {
    cut = await openConnections(target.app);
    target.app.server.closeAllConnections();
    logger.warn({ event: 'connections_cut', cut, ms: elapsedMs() }, 'Shutdown timeout: responses cut');
  }
  await closed;
  await target.release();
  const hurried = options.hurry?.aborted === true;
  logger.info({ event: 'drain_complete', cut, hurried, ms: elapsedMs() }, 'Drained and closed');
  return { cut, hurried };
}

/** Sleeps `ms`, or less if `hurry` aborts; never rejects. */
async function wait(ms: number, hurry: AbortSignal | undefined): Promise<void> {
  if (ms <= 0 || hurry?.aborted) return;
  await sleep(ms, undefined, { signal: hurry }).catch(() => undefined);
}

function anyOf(signal: AbortSignal, other: AbortSignal | undefined): AbortSignal {
  return other === undefined ? signal : AbortSignal.any([signal, other]);
}

/**
 * Closes the Fastify app (listener first) and resolves once every connection has ended. Node closes the
 * connections that are idle when the server closes, but a keep-alive connection whose response finishes
 * later would then stay open until its keep-alive timeout: idle ones are closed again as they appear.
 */
async function closeListener(app: FastifyInstance): Promise<void> {
  const sweeper = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
  try {
    await app.close();
  } finally {
    clearInterval(sweeper);
  }
}

function openConnections(app: FastifyInstance): Promise<number> {
  return new Promise((resolve) => app.server.getConnections((err, n) => resolve(err ? 0 : n)));
}
