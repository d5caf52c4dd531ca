/**
 * A flight's download as a row of named steps (after Varnish's fetch state machine): each step does one
 * thing and says what comes next; the driver below runs them. The steps, each in its own file:
 *
 * 1. **claim** (`claim.ts`): take the recording's lock, or learn that another process holds it;
 * 2. **follow** (`follow.ts`): stream that process's download until its file is final (done) or the lock
 *    comes free (take over: go on at 3);
 * 3. **final?** (here): under the lock, the finished file may already hold this recording (done);
 * 3½. **admit** (here, with `admission/gate.ts`): the upstream breaker, the business's cold-download rate
 *    limit (a new download only) and a turn in the admission queue. Only the process that downloads gets
 *    here: a request that joins a flight or follows another process never queues. The flight waits here
 *    holding the recording's lock, so followers in other processes wait behind it rather than queue for the
 *    same recording themselves; the admission timeout is shorter than the lock timeout (the configuration
 *    enforces it), so they never see RECGATE_LOCK_TIMEOUT because of the queue: the holder gives up first,
 *    and one of them takes over and queues in its own process. A flight whose requests all left while it
 *    waits here starts nothing. The slot stands for a request to the upstream: it is given back as soon as
 *    the body is in, before step 5;
 * 4. **fetch** (`fetch.ts`) and **write** (`write.ts`): resume what an earlier holder left, exchange with the
 *    upstream, write the body into this attempt's own generation; a body that breaks off is fetched again
 *    (resuming with Range when the upstream allows), a bounded number of times;
 * 5. **commit** (`write.ts`): the fencing check, then the rename into place.
 *
 * A lost lock (the database session died) aborts steps 4 and 5 at once; the flight then goes back to step 1
 * and follows whoever took over, so its readers keep streaming. Every other failure fails the flight: its
 * readers' streams error (never end short), waiting requests get the error, and the generation is kept for a
 * later holder to resume, unless its bytes are unusable or nobody could resume it.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createError, isRecgateError, type RecgateError } from '../../errors.js';
import type { AdmissionPermit } from '../admission/admission.js';
import type { CacheEventBody } from '../events.js';
import type { FinalHandle } from '../store/store.js';
import { Claim, isLockLost } from './claim.js';
import type { DownloadContext } from './context.js';
import { exchange, RestartFromZero, type Transfer } from './fetch.js';
import { finalOf, follow } from './follow.js';
import { BodyBroke, PartialFile, Unusable } from './write.js';

/** Runs the flight to its end; never throws (a failure fails the flight). Releases the lock before it resolves. */
export async function runDownload(ctx: DownloadContext): Promise<void> {
  const { flight } = ctx;
  const claim = new Claim(ctx.locker.newLock(flight.id), ctx.log);
  let phase: 'wait' | 'admit' | 'download' = 'wait';
  let saved: RecordingSaved | undefined;
  try {
    for (let losses = 0; ; losses++) {
      phase = 'wait';
      const waited = !(await claim.tryTake());
      if (waited) {
        if (losses === 0) flight.setOrigin('wait');
        ctx.event({ event: 'lock_wait' }, 'Waiting for lock (another worker downloading)');
        const result = await follow(ctx, claim);
        if (result.kind === 'final') {
          completeFrom(ctx, result.final, true);
          return;
        }
      }
      const final = await finalOf(ctx);
      if (final !== undefined) {
        if (!waited && losses === 0) {
          flight.setOrigin('hit');
          ctx.event({ event: 'cache_hit', size: final.info.size }, 'Cache hit');
        }
        completeFrom(ctx, final, waited || losses > 0);
        // A holder that died between its rename and its clean-up left the pointer to a finished generation.
        await ctx.store.discardPartial(flight.id).catch((err: unknown) => {
          ctx.log.warn({ err }, 'Could not remove what a finished download left');
        });
        return;
      }
      phase = 'admit';
      const permit = await admit(ctx, !waited && losses === 0);
      if (waited) {
        ctx.event({ event: 'takeover', received: flight.frontier }, 'Taking over an abandoned download');
      }
      phase = 'download';
      try {
        saved = await download(ctx, claim, waited || losses > 0, permit);
        return;
      } catch (err) {
        if (!isLockLost(err) || losses >= ctx.settings.maxLockLosses) throw err;
        ctx.event(
          {
            event: 'download_failed',
            code: 'RECGATE_LOCK_LOST',
            phase,
            err: (err as RecgateError).cause ?? err,
          },
          'The download lost its lock; following whoever takes over',
          'warn',
        );
        await claim.release();
      } finally {
        permit.release();
      }
    }
  } catch (err) {
    const error = asRecgateError(err, flight.signal);
    flight.fail(error);
    // A queued download nobody wants any more is no failure worth a warning.
    const abandoned = phase === 'admit' && error.code === 'RECGATE_CLIENT_CLOSED';
    ctx.event(
      { event: 'download_failed', code: error.code, phase, err: error.cause ?? error },
      abandoned ? 'Queued download abandoned: every client left' : 'Download failed',
      abandoned ? 'info' : 'warn',
    );
  } finally {
    flight.onStall(undefined);
    await ctx.seekAhead.stop();
    await claim.release();
    // Told once the lock is free, so that the eviction pass this asks for may take the new file at once.
    if (saved !== undefined) ctx.event(saved, 'Recording saved');
    await flight.dispose();
  }
}

type RecordingSaved = Extract<CacheEventBody, { event: 'recording_saved' }>;

/**
 * Step 3½: waits for the gate while any request still wants the recording. `fresh`: a new download (the
 * cold-download rate limit applies), not a takeover.
 */
async function admit(ctx: DownloadContext, fresh: boolean): Promise<AdmissionPermit> {
  const { flight } = ctx;
  const signal = AbortSignal.any([flight.signal, flight.enterQueue()]);
  try {
    return await ctx.gate.enter({ businessId: ctx.businessId, account: ctx.ref.account, fresh }, signal);
  } finally {
    flight.leaveQueue();
  }
}

/** The finished file holds the recording: readers read it. */
function completeFrom(ctx: DownloadContext, final: FinalHandle, waited: boolean): void {
  ctx.flight.own(final);
  if (waited) {
    ctx.event(
      { event: 'available_while_waiting', size: final.info.size },
      'File became available while waiting',
    );
  }
  ctx.flight.complete(final.info, final);
}

/** Steps 4 and 5, holding the lock; resolves to the `recording_saved` event, for after the release. */
async function download(
  ctx: DownloadContext,
  claim: Claim,
  takeover: boolean,
  permit: AdmissionPermit,
): Promise<RecordingSaved> {
  const { flight, settings } = ctx;
  // Everything stops as soon as the lock is lost, not only when the cache closes.
  const signal = AbortSignal.any([flight.signal, claim.lost]);
  const transfer: Transfer = { started: performance.now(), ttfbMs: undefined, bytes: 0 };
  const partial = new PartialFile(ctx, () => claim.verify());
  try {
    await partial.resumeLeftover();
    if (!takeover) {
      const leftover = partial.writer?.length;
      ctx.event(
        leftover === undefined ? { event: 'cache_miss' } : { event: 'cache_miss', leftover },
        'Cache miss - downloading from Twilio',
      );
    }
    let failures = 0;
    while (!partial.complete) {
      signal.throwIfAborted();
      try {
        await partial.receive(await exchange(ctx, partial.writer, signal, transfer), signal, transfer);
        break;
      } catch (err) {
        const retry = err instanceof BodyBroke || err instanceof RestartFromZero;
        if (!retry || signal.aborted || failures >= settings.maxResumeAttempts) throw err;
        failures++;
        ctx.log.warn(
          { event: 'download_retry', attempt: failures, received: partial.writer?.length ?? 0, err },
          'Download broke off; retrying',
        );
        if (err instanceof RestartFromZero) partial.restartFromZero();
        await sleep(50 * failures, undefined, { signal });
      }
    }
    // The body is in: the upstream request is done, and no seek-ahead slice is of use any more. The slot
    // goes back now, with the slices stopped first so that none runs without it; the commit needs neither.
    await ctx.seekAhead.stop();
    permit.release();
    await partial.commit();
    return {
      event: 'recording_saved',
      size: flight.identity!.size,
      bytes: transfer.bytes,
      durationMs: Math.round(performance.now() - transfer.started),
      ttfbMs: Math.round(transfer.ttfbMs ?? 0),
    };
  } catch (err) {
    const error = asRecgateError(err instanceof Unusable ? err.error : err, signal);
    const worthless =
      err instanceof Unusable || discards(error) || (partial.writer !== undefined && !partial.resumable);
    if (worthless && !isLockLost(error)) {
      await partial.discard().catch((discardErr: unknown) => {
        ctx.log.warn({ err: discardErr }, 'Could not remove the partial');
      });
    }
    throw error;
  }
}

/** Failures whose partial must go: its bytes are no use to anyone. */
function discards(error: RecgateError): boolean {
  return (
    error.code === 'RECGATE_RECORDING_GONE' ||
    error.code === 'RECGATE_STORAGE_FULL' ||
    error.code === 'RECGATE_UPSTREAM_BAD_MEDIA'
  );
}

function asRecgateError(err: unknown, signal: AbortSignal): RecgateError {
  if (isRecgateError(err)) return err;
  if (signal.aborted && isRecgateError(signal.reason)) return signal.reason;
  const cause = err instanceof BodyBroke || err instanceof RestartFromZero ? (err.cause ?? err) : err;
  // The last body's own failure says what went wrong: one that stalled is a timeout, not an outage.
  if (isRecgateError(cause)) return cause;
  return createError('RECGATE_UPSTREAM_UNAVAILABLE', { cause });
}
