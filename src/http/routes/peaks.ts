import type { FastifyInstance } from 'fastify';
import { createError } from '../../errors.js';
import { resample } from '../../waveform/peaks.js';
import { MAX_POINTS, Waveforms } from '../../waveform/waveforms.js';
import type { AppDeps } from '../deps.js';
import { RECORDING_CACHE_CONTROL, withRecording } from './download.js';

/** Peaks a request gets without `?points`. */
export const DEFAULT_POINTS = 800;

function parsePoints(value: unknown): number {
  if (value === undefined) return DEFAULT_POINTS;
  if (
    typeof value !== 'string' ||
    !/^\d{1,4}$/.test(value) ||
    Number(value) < 1 ||
    Number(value) > MAX_POINTS
  ) {
    throw createError('RECGATE_INVALID_REQUEST', {
      message: `points must be an integer from 1 to ${MAX_POINTS}`,
    });
  }
  return Number(value);
}

/**
 * `GET /api/calls/{callSid}/peaks?points=N`: the waveform of the call's recording (of the variant that
 * `channels` / `format` name, as for the download), `{"duration_s", "points", "peaks": [0..255, …]}`, with
 * `points` peaks at most (fewer for a very short recording). Authenticated and resolved like the download.
 */
export function peaksRoutes(app: FastifyInstance, deps: AppDeps): void {
  const waveforms = new Waveforms(deps.cache);
  app.get('/api/calls/:callSid/peaks', (request, reply) =>
    withRecording(deps, request, reply, async ({ query, businessId, ref, log, signal, failed }) => {
      const points = parsePoints(query.points);
      const waveform = await waveforms.get(ref, { signal, log, businessId }).catch(failed);
      const peaks = resample(waveform.peaks, points);
      void reply.header('cache-control', RECORDING_CACHE_CONTROL);
      return { duration_s: waveform.durationS, points: peaks.length, peaks };
    }),
  );
}
