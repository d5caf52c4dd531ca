/**
 * A recording's waveform, computed once from its cached file and kept beside it (`{key}.peaks.json`, see
 * `recordings/store/fs.ts`), so later requests read a few kilobytes instead of the recording.
 *
 * A request whose recording is not cached yet goes through the recording cache like a download: one
 * upstream download for every request, process and host (the cache's guarantee), and the peaks are measured
 * while its bytes stream in. In a process, concurrent requests for the same recording share one computation;
 * two processes may each compute it once, and the stored file is replaced atomically (both write the same
 * text). Stored peaks name the recording and the file's size they came from, and are recomputed when the
 * recording under the name changed.
 */
import type { Logger } from 'pino';
import { createError } from '../errors.js';
import { raceAbort } from '../io/abort.js';
import { cacheKeyOf, type RecordingCache, type RecordingRef } from '../recordings/cache.js';
import { MAX_POINTS, measurePeaks, type Waveform, WaveformError } from './peaks.js';

/**
 * Version of `{key}.peaks.json`. 2: exact peaks of decoded MP3 on a linear scale; files of version 1 hold
 * the estimate from MP3 frames' side information, and are computed again.
 */
const STORED_VERSION = 2;

/** What `{key}.peaks.json` holds. */
interface StoredPeaks {
  version: typeof STORED_VERSION;
  recording_sid: string;
  /** Size of the file the peaks were measured on. */
  size: number;
  duration_s: number;
  peaks: number[];
}

export interface WaveformOptions {
  signal?: AbortSignal | undefined;
  log?: Logger | undefined;
  /** The business asking, for the cache's admission when the recording must be downloaded. */
  businessId?: string | undefined;
}

/** Computed peaks remembered in memory, per process. */
const RECENT_ENTRIES = 64;

export class Waveforms {
  readonly #cache: RecordingCache;
  readonly #running = new Map<string, Promise<Waveform>>();
  /** The last peaks this process computed (stored text), by key: requests racing their write use them. */
  readonly #recent = new Map<string, string>();

  constructor(cache: RecordingCache) {
    this.#cache = cache;
  }

  /**
   * The recording's waveform at full resolution ({@link MAX_POINTS} peaks at most). Throws what the cache's
   * `open` throws, and RECGATE_WAVEFORM_UNAVAILABLE when the file is not audio it can measure.
   */
  async get(ref: RecordingRef, options: WaveformOptions = {}): Promise<Waveform> {
    const key = `${cacheKeyOf(ref)}\n${ref.recordingSid}`;
    let running = this.#running.get(key);
    if (running === undefined) {
      const text = await this.#cache.readPeaks?.(ref);
      const stored = await this.#valid(ref, text);
      if (stored !== undefined) return stored;
      // A computation that ended while the file was read wrote it just after: no need for another.
      const recent = await this.#valid(ref, this.#recent.get(key));
      if (recent !== undefined) return recent;
      running = this.#running.get(key);
    }
    if (running === undefined) {
      running = this.#compute(ref, key, options).finally(() => this.#running.delete(key));
      running.catch(() => undefined);
      this.#running.set(key, running);
    }
    return raceAbort(running, options.signal);
  }

  /** Peaks (stored text) if they belong to the file cached now. */
  async #valid(ref: RecordingRef, text: string | undefined): Promise<Waveform | undefined> {
    if (text === undefined) return undefined;
    let parsed: Partial<StoredPeaks>;
    try {
      parsed = JSON.parse(text) as Partial<StoredPeaks>;
    } catch {
      return undefined;
    }
    const state = await this.#cache.state(ref);
    if (
      parsed.version !== STORED_VERSION ||
      parsed.recording_sid !== ref.recordingSid ||
      // Peaks measured on a download's stream are written before its file is renamed into place.
      state.state === 'absent' ||
      parsed.size !== state.size ||
      typeof parsed.duration_s !== 'number' ||
      !Array.isArray(parsed.peaks)
    ) {
      return undefined;
    }
    return { durationS: parsed.duration_s, peaks: parsed.peaks };
  }

  /**
   * Reads the whole recording through the cache (from disk, or as the one download streams it) into
   * {@link measurePeaks}. The computation is shared, so it does not stop when the request that started it
   * goes away.
   */
  async #compute(ref: RecordingRef, key: string, options: WaveformOptions): Promise<Waveform> {
    const recording = await this.#cache.open(ref, { log: options.log, businessId: options.businessId });
    let waveform: Waveform;
    try {
      waveform = await measurePeaks(
        recording.size > 0 ? recording.createReadStream(0, recording.size - 1) : [],
      );
    } catch (err) {
      if (err instanceof WaveformError) {
        throw createError('RECGATE_WAVEFORM_UNAVAILABLE', { cause: err });
      }
      throw err;
    }
    const stored: StoredPeaks = {
      version: STORED_VERSION,
      recording_sid: ref.recordingSid,
      size: recording.size,
      duration_s: waveform.durationS,
      peaks: waveform.peaks,
    };
    const text = JSON.stringify(stored);
    const kept = await this.#cache.writePeaks?.(ref, text).catch((err: unknown) => {
      // The peaks are still right; the next request computes them again.
      options.log?.warn({ err, event: 'peaks_not_stored' }, 'Could not store the waveform peaks');
    });
    // Peaks the cache will not keep (a recording kept encrypted) are not reused from memory either.
    // Requests during the write join this computation; those after it, until the write is seen, use these.
    if (kept !== false) {
      this.#recent.delete(key);
      this.#recent.set(key, text);
      if (this.#recent.size > RECENT_ENTRIES) this.#recent.delete(this.#recent.keys().next().value!);
    }
    return waveform;
  }
}

export { MAX_POINTS };
