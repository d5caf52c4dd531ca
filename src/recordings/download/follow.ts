/**
 * Step 2 (when the lock is taken): follow the download another process runs. Until the final file of this
 * recording appears or the lock comes free, the flight streams the other process's generation to its own
 * readers as the frontier it publishes moves, and waits for the lock at the same time. A generation of
 * another recording (the call's recording changed) is never streamed. Fails with RECGATE_LOCK_TIMEOUT when
 * nothing moves (no sidecar, no growth) for `lockTimeoutMs`; bytes arriving count as movement even when the
 * upstream gave no size.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createError } from '../../errors.js';
import type { FinalHandle } from '../store/store.js';
import type { Claim } from './claim.js';
import { type DownloadContext, holds, identityOf } from './context.js';

export type FollowResult = { kind: 'acquired' } | { kind: 'final'; final: FinalHandle };

export async function follow(ctx: DownloadContext, claim: Claim): Promise<FollowResult> {
  const { flight, settings } = ctx;
  const stopWaiting = new AbortController();
  let acquired = false;
  const taking = claim.take(stopWaiting.signal).then(
    () => {
      acquired = true;
    },
    (err: unknown) => {
      if (!stopWaiting.signal.aborted) throw err;
    },
  );
  const watch = new Watch(ctx);
  let keep = false;
  let lastProgress = performance.now();
  try {
    for (;;) {
      await Promise.race([taking, sleep(settings.pollIntervalMs, undefined, { signal: flight.signal })]);
      if (acquired) {
        keep = true;
        return { kind: 'acquired' };
      }
      const final = await finalOf(ctx);
      if (final !== undefined) return { kind: 'final', final };
      if (await watch.look()) lastProgress = performance.now();
      else if (performance.now() - lastProgress > settings.lockTimeoutMs) {
        throw createError('RECGATE_LOCK_TIMEOUT', {
          cause: new Error(`no progress from the lock holder for ${settings.lockTimeoutMs} ms`),
        });
      }
    }
  } finally {
    stopWaiting.abort();
    await taking.catch(() => undefined);
    if (acquired && !keep) await claim.release();
  }
}

/** The finished file, opened, if it holds this recording. */
export async function finalOf(ctx: DownloadContext): Promise<FinalHandle | undefined> {
  const handle = await ctx.store.openFinal(ctx.flight.id);
  if (handle === undefined) return undefined;
  if (holds(handle.info, ctx.ref)) return handle;
  await handle.close();
  return undefined;
}

/** What the follower has seen of the other process's download. */
class Watch {
  readonly #ctx: DownloadContext;
  /** The frontier last seen, for a generation of unknown size that readers cannot use yet. */
  #seen = -1;

  constructor(ctx: DownloadContext) {
    this.#ctx = ctx;
  }

  /** One look at the current generation; `true` when it moved since the last look. */
  async look(): Promise<boolean> {
    const { store, flight, ref } = this.#ctx;
    const id = flight.id;
    const following = flight.current;
    if (following !== undefined && flight.meta?.fileId === following.fileId) {
      // The generation followed is still current while its frontier file exists (a new holder removes it).
      const frontier = await store.readFrontier(id, following.fileId);
      if (frontier !== undefined) {
        const next = Math.min(frontier, flight.identity!.size);
        if (next <= flight.frontier) return false;
        flight.advance(next);
        return true;
      }
    }
    const meta = await store.readMeta(id);
    if (meta === undefined || meta.recordingSid !== ref.recordingSid) return false;
    const frontier = await store.readFrontier(id, meta.fileId);
    if (frontier === undefined) return false;
    if (meta.size === null) {
      // Nothing to stream without a size; growth still shows the holder is alive.
      const moved = frontier !== this.#seen;
      this.#seen = frontier;
      return moved;
    }
    if (following?.fileId === meta.fileId) return false;
    const handle = await store.openPartial(id, meta.fileId);
    if (handle === undefined) return false;
    flight.own(handle);
    flight.setIdentity(identityOf(meta, meta.size));
    // The file's length says nothing about the frontier: slices may have been written beyond it.
    flight.adopt(handle, Math.min(frontier, meta.size), meta);
    return true;
  }
}
