/**
 * When the `--workers` primary restarts a worker that died after it started, and when it gives up. Pure:
 * the caller passes the time, so tests need no clock.
 *
 * Each worker slot (1..N) keeps its own history: a slot restarts after a delay that doubles with each of
 * its exits within the window, up to a cap, and the primary gives up when one slot has exited
 * `maxCrashes` times within the window. Per slot, so that N workers dying at once (an OOM kill, an
 * operator's signal) count as one exit each, not N exits of one loop.
 */

export interface RestartPolicyOptions {
  /** Delay before restarting a slot after its first exit within the window, in ms. @default 100 */
  restartDelayMs?: number;
  /** Cap on the doubling delay, in ms. @default 5000 */
  maxRestartDelayMs?: number;
  /**
   * Exits of one slot within `crashWindowMs` at which the primary stops every worker and exits non-zero.
   * With the defaults a worker that dies at once after each start gives up after about 3 s of delays
   * (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s) plus six start-ups. @default 6
   */
  maxCrashes?: number;
  /** The window, in ms; exits older than this are forgotten (and the delay falls back). @default 60000 */
  crashWindowMs?: number;
}

export const RESTART_DEFAULTS: Readonly<Required<RestartPolicyOptions>> = {
  restartDelayMs: 100,
  maxRestartDelayMs: 5000,
  maxCrashes: 6,
  crashWindowMs: 60_000,
};

export type RestartDecision =
  /** Fork a replacement after `delayMs`; `exits` counts this slot's exits within the window. */
  | { restart: true; delayMs: number; exits: number }
  /** The slot is crash-looping: stop everything. */
  | { restart: false; exits: number };

export class RestartPolicy {
  readonly #options: Required<RestartPolicyOptions>;
  readonly #exits = new Map<number, number[]>();

  /** Throws TypeError naming the option that is not an integer in range. */
  constructor(options: RestartPolicyOptions = {}) {
    const o = { ...RESTART_DEFAULTS, ...stripUndefined(options) };
    integer('restartDelayMs', o.restartDelayMs, 0);
    integer('maxRestartDelayMs', o.maxRestartDelayMs, o.restartDelayMs);
    integer('maxCrashes', o.maxCrashes, 1);
    integer('crashWindowMs', o.crashWindowMs, 1);
    this.#options = o;
  }

  get options(): Readonly<Required<RestartPolicyOptions>> {
    return this.#options;
  }

  /** Records that the worker in `slot` exited at `now` (ms) and says whether, and when, to restart it. */
  onExit(slot: number, now: number): RestartDecision {
    const { restartDelayMs, maxRestartDelayMs, maxCrashes, crashWindowMs } = this.#options;
    const exits = (this.#exits.get(slot) ?? []).filter((t) => t > now - crashWindowMs);
    exits.push(now);
    this.#exits.set(slot, exits);
    if (exits.length >= maxCrashes) return { restart: false, exits: exits.length };
    const delayMs = Math.min(maxRestartDelayMs, restartDelayMs * 2 ** (exits.length - 1));
    return { restart: true, delayMs, exits: exits.length };
  }
}

function integer(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`options.${name} must be an integer >= ${min}`);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
