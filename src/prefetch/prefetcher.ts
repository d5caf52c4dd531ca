/**
 * Runs prefetch jobs: claims due jobs from the shared {@link PrefetchQueue}, downloads each recording
 * through the recording cache (the same single download, lock and admission as a user's request), and
 * records the outcome. Each worker process runs one; the queue hands each job to one of them.
 *
 * A job whose call is unknown, purged or deleted upstream, or whose recording is gone, fails at once (there
 * is nothing to fetch); a recording the download finds deleted at Twilio is also told to the recording
 * state, which marks its calls and removes its local copies as for a user's request. A transient failure
 * (an outage, a full disk, a recording still processing) is tried again after a backoff that doubles from
 * `retryBaseMs`, up to `maxAttempts`.
 */
import type { Logger } from 'pino';
import type { CallLog } from '../call-log/call-log.js';
import { createError, isRecgateError } from '../errors.js';
import type { RecordingCache, RecordingRef } from '../recordings/cache.js';
import type { RecordingState } from '../resolution/state.js';
import type { PrefetchJob, PrefetchQueue } from './queue.js';

export type PrefetchOutcome = 'done' | 'retry' | 'failed';

export interface PrefetcherOptions {
  queue: PrefetchQueue;
  cache: Pick<RecordingCache, 'open'>;
  callLog: Pick<CallLog, 'get' | 'isPurged'>;
  /**
   * Told of every failed download (src/resolution/state.ts): one that found the recording deleted at Twilio
   * marks its calls and removes its local copies. @default none: only the job fails
   */
  state?: Pick<RecordingState, 'downloadFailed'>;
  logger: Logger;
  /** Downloads this process runs for prefetch at once; 0 disables the prefetcher. @default 2 */
  concurrency?: number;
  /** Pause between two looks at an empty queue, ms (an enqueue in this process wakes it at once). @default 2000 */
  pollMs?: number;
  /** How long a claim holds a job before another worker may take it over, ms. @default 600000 */
  leaseMs?: number;
  /** @default 6 */
  maxAttempts?: number;
  /** First retry delay, ms; doubles each attempt, at most an hour. @default 5000 */
  retryBaseMs?: number;
  /** Told each job's outcome (metrics). */
  onOutcome?: (outcome: PrefetchOutcome) => void;
  /**
   * The Twilio account a business's recordings are read from (src/accounts/directory.ts), named in the ref
   * so the download uses that account. @default none: the main account
   */
  accountOf?: (businessId: string) => Promise<string>;
}

/** Codes that say the recording will never be fetched: no retry. */
const FINAL_CODES = new Set([
  'RECGATE_RECORDING_GONE',
  'RECGATE_RECORDING_PURGED',
  'RECGATE_NOT_FOUND',
  'RECGATE_UPSTREAM_BAD_MEDIA',
]);

export class Prefetcher {
  readonly #o: Required<Omit<PrefetcherOptions, 'onOutcome' | 'accountOf' | 'state'>> &
    Pick<PrefetcherOptions, 'onOutcome' | 'accountOf' | 'state'>;
  readonly #abort = new AbortController();
  readonly #running = new Set<Promise<void>>();
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: PrefetcherOptions) {
    this.#o = {
      concurrency: 2,
      pollMs: 2000,
      leaseMs: 600_000,
      maxAttempts: 6,
      retryBaseMs: 5000,
      ...options,
    };
  }

  /** Starts claiming jobs (nothing when concurrency is 0). */
  start(): void {
    if (this.#o.concurrency > 0) this.#loop ??= this.#run();
  }

  /** Looks at the queue now: a job was just queued. */
  wake(): void {
    this.#wake?.();
  }

  /**
   * Stops claiming and aborts the waits of running jobs (their downloads, shared, go on while the cache
   * runs); their jobs go back to the queue at once, for this or another worker, rather than waiting for
   * their lease to end. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#abort.abort();
      this.#wake?.();
      await this.#loop;
      await Promise.allSettled([...this.#running]);
    })();
    return this.#closing;
  }

  async #run(): Promise<void> {
    const { queue, logger } = this.#o;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      const free = this.#o.concurrency - this.#running.size;
      let jobs: PrefetchJob[] = [];
      if (free > 0) {
        try {
          jobs = await queue.claim(free, this.#o.leaseMs);
        } catch (err) {
          logger.warn({ err, event: 'prefetch_claim_failed' }, 'Could not claim prefetch jobs');
        }
      }
      for (const job of jobs) {
        const task: Promise<void> = this.#job(job).finally(() => {
          this.#running.delete(task);
          this.wake();
        });
        this.#running.add(task);
      }
      if (jobs.length === 0 || jobs.length < free) await this.#pause();
    }
  }

  #pause(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.#o.pollMs);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wake = undefined;
        resolve();
      }
      this.#wake = done;
    });
  }

  async #job(job: PrefetchJob): Promise<void> {
    const { queue, logger } = this.#o;
    const log = logger.child({ event: 'prefetch', callSid: job.callSid, recordingSid: job.recordingSid });
    let outcome: PrefetchOutcome;
    try {
      await this.#fetch(job);
      await queue.complete(job.recordingSid);
      outcome = 'done';
      log.info({ attempts: job.attempts }, 'Prefetched a recording');
    } catch (err) {
      if (this.#abort.signal.aborted) {
        // Stopping: the job is due again now, not when the lease ends.
        await queue.retry(job.recordingSid, 'RECGATE_SHUTTING_DOWN: the worker stopped', 0).catch(() => {});
        return;
      }
      const code = isRecgateError(err) ? err.code : 'RECGATE_INTERNAL';
      const message = `${code}: ${err instanceof Error ? err.message : String(err)}`;
      const final = FINAL_CODES.has(code) || job.attempts >= this.#o.maxAttempts;
      try {
        if (final) await queue.fail(job.recordingSid, message);
        else await queue.retry(job.recordingSid, message, this.#delay(job.attempts, err));
      } catch (queueErr) {
        log.warn({ err: queueErr }, 'Could not record the prefetch outcome; the lease will hand it on');
      }
      outcome = final ? 'failed' : 'retry';
      log[final ? 'warn' : 'info'](
        { code, attempts: job.attempts, err },
        `Prefetch ${final ? 'failed' : 'will retry'}`,
      );
    }
    this.#o.onOutcome?.(outcome);
  }

  /** Downloads the recording unless the call log says there is nothing to fetch. */
  async #fetch(job: PrefetchJob): Promise<void> {
    const { callLog, cache } = this.#o;
    const call = await callLog.get(job.callSid);
    if (call === undefined || call.businessId !== job.businessId) {
      throw createError('RECGATE_NOT_FOUND', { message: 'The call is not registered to this business' });
    }
    if (call.purgedAt !== null || (await callLog.isPurged(job.recordingSid))) {
      throw createError('RECGATE_RECORDING_PURGED');
    }
    if (call.recordingState === 'deleted') throw createError('RECGATE_RECORDING_GONE');
    const signal = this.#abort.signal;
    const account = await this.#o.accountOf?.(job.businessId);
    const ref: RecordingRef = { ownerCallSid: job.callSid, recordingSid: job.recordingSid, account };
    const recording = await cache
      // The business's place in the fair upstream queue, as for its users' own requests.
      .open(ref, { signal, log: this.#o.logger, businessId: job.businessId })
      .catch(async (err: unknown) => {
        await this.#o.state?.downloadFailed(ref, err, this.#o.logger);
        throw err;
      });
    if (recording.complete) return;
    // Reading along is what keeps a reader on the download; the bytes go nowhere.
    for await (const _ of recording.createReadStream(0, recording.size - 1)) {
      signal.throwIfAborted();
    }
  }

  #delay(attempts: number, err: unknown): number {
    const retryAfter = isRecgateError(err) ? Number(err.headers['retry-after']) : Number.NaN;
    const backoff = Math.min(3_600_000, this.#o.retryBaseMs * 2 ** Math.max(0, attempts - 1));
    return Number.isFinite(retryAfter) ? Math.max(backoff, retryAfter * 1000) : backoff;
  }
}
