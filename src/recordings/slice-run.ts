/**
 * One seek-ahead slice, from its request to its event (see `seek-ahead.ts` for when slices are fetched and
 * what bounds them), and the block-map rules every slice follows.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { isRecgateError } from '../errors.js';
import { raceAbort } from '../io/abort.js';
import type { MediaResponse } from '../upstream/upstream.js';
import type { SeekAheadDeps } from './seek-ahead.js';
import type { BlockMap, BlockMapHeader, BlockRecord, PartialMeta, SliceHandle } from './store/store.js';

/** A slice of the recording being fetched: `[start, stop)`. */
export interface Slice {
  start: number;
  /** Exclusive; `Infinity` for an early slice until the size is known. */
  stop: number;
  readonly abort: AbortController;
  done: Promise<void>;
}

/** What a {@link SliceRun} may ask of the seek-ahead it belongs to; the shared state stays there. */
export interface SliceCoordinator {
  /** Why seek-ahead is off for the generation, if it is. */
  off(): string | undefined;
  /** The download serves no ranges: seek-ahead is off. */
  noRanges(): void;
  sync(meta: SliceableMeta): void;
  /** Checks a response against the download's validators; `false` (and seek-ahead off) on a mismatch. */
  validate(response: MediaResponse, slice: Slice, meta: SliceableMeta): Promise<boolean>;
  /** Another process fetches the block holding `start`: look again later. */
  busy(start: number): void;
  apply(map: BlockMap | undefined, meta: SliceableMeta): void;
  budget(size: number): number;
}

/**
 * One slice, from its request to its event: the steps run in order, each may end the slice, and every slice
 * request ends in exactly one `seek_ahead` or `seek_ahead_discarded` event.
 *
 * 1. `#ready`: an early slice (sent with the download's own request) waits for the download's size;
 * 2. `#claim`: a byte-range lock on the generation's file, and a `claim` in its block map within the
 *    recording's budget, so no two processes fetch the same bytes and all together stay within it;
 * 3. `#exchange`: the ranged request (unless the early one is there), checked against the download's
 *    validators;
 * 4. `#stream`: the body into the file at its offset, recorded as `have` in the block map as it lands, until
 *    the download catches up or the flight ends;
 * 5. `#report`: the event.
 */
export class SliceRun {
  readonly #d: SeekAheadDeps;
  readonly #c: SliceCoordinator;
  readonly #slice: Slice;
  readonly #early: Promise<MediaResponse> | undefined;
  readonly #started = performance.now();
  #response: MediaResponse | undefined;
  #handle: SliceHandle | undefined;
  #ttfbMs: number | undefined;
  /** Body bytes received. */
  #received = 0;
  /** Where the next body byte goes. */
  #position: number;
  /** What became of a response: used (streamed), refused by the validators, or not needed (and why). */
  #outcome: 'streamed' | 'rejected' | { unused: string } = { unused: 'superseded' };
  #failure: string | undefined;

  constructor(
    deps: SeekAheadDeps,
    coordinator: SliceCoordinator,
    slice: Slice,
    early: Promise<MediaResponse> | undefined,
  ) {
    this.#d = deps;
    this.#c = coordinator;
    this.#slice = slice;
    this.#early = early;
    this.#position = slice.start;
  }

  async run(): Promise<void> {
    const signal = this.#slice.abort.signal;
    try {
      const meta = await this.#ready();
      if (meta === undefined || !(await this.#claim(meta)) || !(await this.#exchange(meta))) return;
      await this.#stream(meta);
    } catch (err) {
      if (signal.aborted) return;
      this.#failure = isRecgateError(err) ? err.code : 'RECGATE_UPSTREAM_UNAVAILABLE';
      throw err;
    } finally {
      this.#response?.body.destroy();
      await this.#handle?.close();
      this.#report();
    }
  }

  /** The generation to slice, once the download knows its size; `undefined` when there is none to slice. */
  async #ready(): Promise<SliceableMeta | undefined> {
    const { flight } = this.#d;
    if (this.#early !== undefined) {
      this.#response = await this.#early;
      this.#ttfbMs = performance.now() - this.#started;
      await raceAbort(flight.ready, this.#slice.abort.signal);
    }
    const meta = flight.meta;
    if (!sliceable(meta) || flight.identity === undefined || flight.state !== 'running') {
      // An early slice went out before the download said it serves no ranges: nothing more is tried.
      if (meta !== undefined && !meta.acceptsRanges) {
        this.#c.noRanges();
        this.#outcome = { unused: 'no_range' };
      }
      return undefined;
    }
    this.#c.sync(meta);
    if (this.#c.off() !== undefined) return undefined;
    this.#slice.stop = Math.min(this.#slice.stop, meta.size);
    if (this.#slice.start >= this.#slice.stop) return undefined;
    if (this.#response !== undefined && !(await this.#c.validate(this.#response, this.#slice, meta))) {
      this.#outcome = 'rejected';
      return undefined;
    }
    return meta;
  }

  /** Claims the range on disk and in the block map; `false` when another process has it or the budget is spent. */
  async #claim(meta: SliceableMeta): Promise<boolean> {
    const { flight, store } = this.#d;
    const slice = this.#slice;
    this.#handle = await store.openSlice(flight.id, meta.fileId);
    if (this.#handle === undefined) return false;
    if (!(await this.#handle.claim(slice.start, slice.stop))) {
      // Another process fetches (part of) this range: its block-map records will tell when it is there.
      this.#c.busy(slice.start);
      return false;
    }
    const token = randomBytes(8).toString('hex');
    const claim: BlockRecord = { t: 'claim', token, start: slice.start, end: slice.stop };
    if (!(await store.appendBlockMap(flight.id, headerOf(meta), [claim]))) return false;
    const map = await store.readBlockMap(flight.id, meta.fileId);
    this.#c.apply(map, meta);
    return this.#c.off() === undefined && granted(map, token, this.#c.budget(meta.size));
  }

  /** The slice's response: the early one, or a ranged request now; `false` when the validators refuse it. */
  async #exchange(meta: SliceableMeta): Promise<boolean> {
    if (this.#response !== undefined) return true;
    const slice = this.#slice;
    this.#response = await this.#d.upstream.fetchMedia(this.#d.flight.ref.recordingSid, {
      signal: slice.abort.signal,
      start: slice.start,
      end: slice.stop - 1,
      ifRange: meta.etag,
      variant: this.#d.flight.ref.variant,
      account: this.#d.flight.ref.account,
    });
    this.#ttfbMs = performance.now() - this.#started;
    if (await this.#c.validate(this.#response, slice, meta)) return true;
    this.#outcome = 'rejected';
    return false;
  }

  /**
   * Writes the body at its offset as it arrives, recording what landed in the block map every block (and
   * however the body ended). Stops as soon as the download catches up or the flight ends, even while the body
   * is silent: the holder's commit waits for slice writers to let go of the file.
   */
  async #stream(meta: SliceableMeta): Promise<void> {
    const { flight, store } = this.#d;
    const slice = this.#slice;
    const signal = slice.abort.signal;
    const body = this.#response!.body;
    const handle = this.#handle!;
    const header = headerOf(meta);
    const record = () =>
      store.appendBlockMap(flight.id, header, [{ t: 'have', start: slice.start, end: this.#position }]);
    const watch = setInterval(() => {
      if (flight.state !== 'running' || flight.frontier >= this.#position || this.#c.off() !== undefined) {
        slice.abort.abort(new Error('the download caught up'));
      }
    }, this.#d.pollIntervalMs);
    const stopBody = () => body.destroy();
    signal.addEventListener('abort', stopBody, { once: true });
    let recorded = slice.start;
    this.#outcome = 'streamed';
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        this.#received += chunk.byteLength;
        if (signal.aborted || this.#c.off() !== undefined || flight.state !== 'running') break;
        if (flight.current?.fileId !== meta.fileId || flight.frontier >= this.#position) break;
        const piece = chunk.subarray(0, slice.stop - this.#position);
        await handle.write(piece, this.#position);
        this.#position += piece.byteLength;
        flight.addExtent(meta.fileId, slice.start, this.#position);
        if (this.#position - recorded >= this.#d.pool.settings.blockBytes || this.#position >= slice.stop) {
          await record();
          recorded = this.#position;
        }
        if (this.#position >= slice.stop) break;
      }
    } finally {
      clearInterval(watch);
      signal.removeEventListener('abort', stopBody);
      if (recorded < this.#position && this.#c.off() === undefined) {
        await record().catch((err: unknown) => this.#d.log.warn({ err }, 'Could not record a slice'));
      }
    }
  }

  /** The slice request's one event (none when no request went out, or when the validators refused it). */
  #report(): void {
    const response = this.#response;
    const outcome = this.#outcome;
    if (response === undefined || outcome === 'rejected') return;
    if (outcome === 'streamed') {
      this.#d.event(
        {
          event: 'seek_ahead',
          offset: this.#slice.start,
          end: this.#position,
          bytes: this.#received,
          ttfbMs: Math.round(this.#ttfbMs ?? 0),
          durationMs: Math.round(performance.now() - this.#started),
          ...(this.#failure === undefined ? {} : { error: this.#failure }),
        },
        'Fetched a slice ahead of the download',
      );
      return;
    }
    this.#d.event(
      {
        event: 'seek_ahead_discarded',
        reason: response.status === 206 ? outcome.unused : 'no_range',
        offset: this.#slice.start,
        bytes: this.#received,
      },
      'A slice was not used',
    );
  }
}

export type SliceableMeta = PartialMeta & { etag: string; size: number };

/** Only an upstream that said it serves ranges, with an ETag and a size to check slices against, is sliced. */
export function sliceable(meta: PartialMeta | undefined): meta is SliceableMeta {
  return meta?.acceptsRanges === true && meta.etag !== null && meta.size !== null;
}

export function headerOf(meta: SliceableMeta): BlockMapHeader {
  return { fileId: meta.fileId, size: meta.size, etag: meta.etag, lastModified: meta.lastModified };
}

export function sameHeader(a: BlockMapHeader, b: BlockMapHeader): boolean {
  return a.fileId === b.fileId && a.size === b.size && a.etag === b.etag && a.lastModified === b.lastModified;
}

/** Whether the claim `token` fits the budget, counting claims in the order every process reads them. */
export function granted(map: BlockMap | undefined, token: string, budget: number): boolean {
  if (map === undefined) return false;
  let claimed = 0;
  for (const record of map.records) {
    if (record.t !== 'claim') continue;
    const length = record.end - record.start;
    const fits = claimed + length <= budget;
    if (fits) claimed += length;
    if (record.token === token) return fits;
  }
  return false;
}
