/** Sends one planned soak request over a shared undici Agent and reports its timings and what was wrong with it. */
import type { Agent, Dispatcher } from 'undici';
import { BodyCheck, checkHead, type PlannedRequest } from './requests.js';

export interface Outcome {
  /** What was wrong with the response, or undefined when it was exactly as planned. */
  problem?: string;
  /** Body bytes received. */
  bytes: number;
  /** Request start to the first body byte (to the response headers when there is no body), in ms. */
  ttfbMs: number;
  /** Request start to the end of the response (or to going away, for a disconnect), in ms. */
  ttlbMs: number;
}

/** The reason the client aborts a request it means to walk away from. */
class Disconnect extends Error {
  override name = 'Disconnect';
}

export function send(agent: Agent, origin: string, plan: PlannedRequest): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    const t0 = performance.now();
    let headersAt = Number.NaN;
    let firstByteAt = Number.NaN;
    let problem: string | undefined;
    let check: BodyCheck | undefined;
    let bytes = 0;
    const finish = (extra: string | undefined) => {
      const end = performance.now();
      problem ??= extra;
      resolve({
        ...(problem === undefined ? {} : { problem }),
        bytes,
        ttfbMs: (Number.isNaN(firstByteAt) ? (Number.isNaN(headersAt) ? end : headersAt) : firstByteAt) - t0,
        ttlbMs: end - t0,
      });
    };
    const handler: Dispatcher.DispatchHandler = {
      // Its presence selects undici's controller-style handler API.
      onRequestStart() {},
      onResponseStart(_controller, statusCode, headers) {
        headersAt = performance.now();
        problem = checkHead(plan, statusCode, headers);
        if (problem === undefined) check = new BodyCheck(plan);
      },
      onResponseData(controller, chunk) {
        if (bytes === 0) firstByteAt = performance.now();
        bytes += chunk.length;
        check?.update(chunk);
        if (plan.disconnectAfter !== undefined && bytes >= plan.disconnectAfter && !controller.aborted) {
          controller.abort(new Disconnect());
        }
      },
      onResponseEnd() {
        finish(check?.complete());
      },
      onResponseError(_controller, err) {
        if (err instanceof Disconnect) finish(check?.cut());
        else finish(`request failed after ${bytes} body bytes: ${err.name}: ${err.message}`);
      },
    };
    agent.dispatch({ origin, path: plan.path, method: plan.method, headers: plan.headers }, handler);
  });
}
