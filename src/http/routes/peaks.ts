import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createError } from '../../errors.js';
import type { RecordingRef } from '../../recordings/cache.js';
import { isCanonical, parseVariant } from '../../recordings/variant.js';
import { parseCallSid } from '../../sid.js';
import { resample } from '../../waveform/peaks.js';
import { MAX_POINTS, Waveforms } from '../../waveform/waveforms.js';
import { authenticateDownload } from '../auth.js';
import type { AppDeps } from '../deps.js';
import { RECORDING_CACHE_CONTROL } from './download.js';

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
  app.get('/api/calls/:callSid/peaks', async (request, reply) => {
    const callSid = parseCallSid((request.params as { callSid: string }).callSid);
    const query = request.query as Record<string, unknown>;
    const variant = parseVariant(query);
    const points = parsePoints(query.points);
    const { businessId } = await authenticateDownload(deps, request, callSid);
    const call = await deps.callLog.getForBusiness(businessId, callSid);
    if (!call) throw createError('RECGATE_NOT_FOUND');
    const abort = new AbortController();
    const onClose = () => abort.abort(createError('RECGATE_CLIENT_CLOSED'));
    reply.raw.once('close', onClose);
    try {
      const log = request.log as Logger;
      const resolved = await deps.resolver.resolve(call, abort.signal, log);
      const ref: RecordingRef = isCanonical(variant) ? resolved : { ...resolved, variant };
      const waveform = await waveforms
        .get(ref, { signal: abort.signal, log, businessId })
        .catch(async (err) => {
          await deps.state.downloadFailed(ref, err);
          throw err;
        });
      const peaks = resample(waveform.peaks, points);
      void reply.header('cache-control', RECORDING_CACHE_CONTROL);
      return { duration_s: waveform.durationS, points: peaks.length, peaks };
    } finally {
      reply.raw.off('close', onClose);
    }
  });
}
