/**
 * `recgate prefetch`: downloads recordings before anyone asks, for one call (`--call`), a business's calls
 * in the call log (`--business`), or the recordings Twilio made in a date range (`--since [--until]`, through
 * Twilio's list API).
 *
 * The steps, each a function below:
 * 1. **select**: which recordings. A call or a business's calls are resolved as a play would resolve them
 *    (the call log's recording, else Twilio's, else the parent's); for a date range, each `completed`
 *    recording whose call is registered to a business. Purged and deleted ones are skipped, and each skip is
 *    said, with why;
 * 2. **enqueue**: a job per recording in the shared prefetch queue (the database's `prefetch_jobs`);
 * 3. **run** (unless `--no-run`): a {@link Prefetcher} in this process runs due jobs through the same
 *    recording cache as the gateways (same files, lock and admission), so a recording a gateway is fetching
 *    is downloaded once. Running gateways may take some of the jobs; either way they end in the queue;
 * 4. **wait**: the queue is watched until each job is done or failed, with a progress bar on a terminal (one
 *    line per job otherwise, so logs stay clean), then a summary: queued, done, failed (with reasons),
 *    skipped.
 *
 * Exit 0 when every job is done (or there was nothing to do), 1 when any failed, 2 for bad usage. The
 * in-process prefetcher is a prefetcher like a gateway's, with the same retry policy: it may run other due
 * jobs of the queue too, and a job that fails for a reason that may pass (Twilio unavailable, a full disk)
 * goes back to the queue with a backoff. This command does not wait for that retry: it reports the job
 * failed, and the gateways' prefetchers retry it.
 */
import { SingleBar } from 'cli-progress';
import type { CallRecord } from '../call-log/call-log.js';
import type { ConfigInput } from '../config/config.js';
import { parseDatabaseUrl } from '../config/database-url.js';
import { isRecgateError } from '../errors.js';
import {
  openPrefetchQueue,
  Prefetcher,
  type PrefetchJobInput,
  type PrefetchQueue,
} from '../prefetch/index.js';
import { RecordingResolver } from '../resolution/resolver.js';
import type { CallSid, RecordingSid } from '../sid.js';
import {
  type AdminContext,
  adminConfig,
  type CommandIo,
  EXIT_FAILED,
  EXIT_OK,
  messageOf,
  openAdmin,
} from './admin.js';

export type PrefetchSelection =
  | { kind: 'call'; callSid: CallSid }
  | { kind: 'business'; businessId: string }
  | { kind: 'range'; since: Date; until: Date | undefined };

export interface PrefetchCommandOptions {
  selection: PrefetchSelection;
  /** Run the jobs in this process and wait for them; `false` only queues them. @default true */
  run: boolean;
  flags: ConfigInput;
  io: CommandIo;
  env?: NodeJS.ProcessEnv;
  /** How often the queue is read while waiting, ms. @default 100 */
  pollMs?: number;
}

interface Skip {
  what: string;
  reason: string;
}

interface Selected {
  jobs: PrefetchJobInput[];
  skipped: Skip[];
}

interface Finished {
  job: PrefetchJobInput;
  ok: boolean;
  reason: string;
}

/** Calls read from the call log per page for `--business`. */
const PAGE = 200;

export async function runPrefetch(options: PrefetchCommandOptions): Promise<number> {
  const { io } = options;
  const env = options.env ?? process.env;
  let admin: AdminContext;
  let queue: PrefetchQueue;
  try {
    const config = adminConfig(options.flags, env);
    admin = await openAdmin(config, { cache: options.run, upstream: true }, env);
    const opened = await openPrefetchQueue(parseDatabaseUrl(config.databaseUrl, config.dataDir)).catch(
      async (err: unknown) => {
        await admin.close();
        throw err;
      },
    );
    if (opened === undefined) {
      await admin.close();
      throw new Error('an in-memory database has no prefetch queue: use a database file or PostgreSQL');
    }
    queue = opened;
  } catch (err) {
    io.err(`recgate prefetch: ${messageOf(err)}`);
    return EXIT_FAILED;
  }
  try {
    const selected = await select(admin, options.selection, io);
    for (const job of selected.jobs) await queue.enqueue(job);
    if (!options.run) {
      io.out(
        `queued ${selected.jobs.length} for the gateways' prefetchers, skipped ${selected.skipped.length}`,
      );
      return EXIT_OK;
    }
    const finished = await runAndWait(admin, queue, selected.jobs, options);
    return summarize(selected, finished, io);
  } catch (err) {
    io.err(`recgate prefetch: ${messageOf(err)}`);
    return EXIT_FAILED;
  } finally {
    await queue.close();
    await admin.close();
  }
}

/** Step 1: the recordings to fetch, and what was skipped (each said at once). */
async function select(admin: AdminContext, selection: PrefetchSelection, io: CommandIo): Promise<Selected> {
  const selected: Selected = { jobs: [], skipped: [] };
  const skip = (what: string, reason: string) => {
    selected.skipped.push({ what, reason });
    io.out(`skip  ${what}: ${reason}`);
  };
  // Calls that play one recording (a <Dial> pair) make one job.
  const seen = new Set<RecordingSid>();
  const add = (job: PrefetchJobInput) => {
    if (seen.has(job.recordingSid)) return;
    seen.add(job.recordingSid);
    selected.jobs.push(job);
  };
  if (selection.kind === 'range') {
    await selectRange(admin, selection, add, skip);
    return selected;
  }
  const resolver = new RecordingResolver({
    callLog: admin.callLog,
    state: admin.state,
    upstream: admin.upstream!,
    accounts: admin.accounts,
  });
  for await (const call of callsOf(admin, selection)) {
    const job = await jobOfCall(admin, resolver, call, skip);
    if (job) add(job);
  }
  return selected;
}

async function* callsOf(
  admin: AdminContext,
  selection: Exclude<PrefetchSelection, { kind: 'range' }>,
): AsyncGenerator<CallRecord> {
  if (selection.kind === 'call') {
    const call = await admin.callLog.get(selection.callSid);
    if (call === undefined) throw new Error(`no call ${selection.callSid} in the call log`);
    yield call;
    return;
  }
  let cursor: string | undefined;
  do {
    const page = await admin.callLog.list(selection.businessId, { limit: PAGE, cursor });
    yield* page.calls;
    cursor = page.nextCursor ?? undefined;
  } while (cursor !== undefined);
}

/** The job for a call's recording, resolved as a play resolves it; `undefined` (and a skip) when none. */
async function jobOfCall(
  admin: AdminContext,
  resolver: RecordingResolver,
  call: CallRecord,
  skip: (what: string, reason: string) => void,
): Promise<PrefetchJobInput | undefined> {
  let ref: { recordingSid: RecordingSid; ownerCallSid: CallSid };
  try {
    ref = await resolver.resolve(call, undefined, admin.logger);
  } catch (err) {
    skip(call.callSid, skipReason(err));
    return undefined;
  }
  if (ref.ownerCallSid !== call.callSid) {
    const owner = await admin.callLog.get(ref.ownerCallSid);
    if (owner?.businessId !== call.businessId) {
      skip(
        call.callSid,
        `its recording ${ref.recordingSid} is on call ${ref.ownerCallSid}, not registered to ${call.businessId}`,
      );
      return undefined;
    }
  }
  return { recordingSid: ref.recordingSid, callSid: ref.ownerCallSid, businessId: call.businessId };
}

function skipReason(err: unknown): string {
  const code = isRecgateError(err) ? err.code : undefined;
  switch (code) {
    case 'RECGATE_RECORDING_PURGED':
      return 'purged';
    case 'RECGATE_RECORDING_GONE':
      return 'deleted at Twilio';
    case 'RECGATE_NOT_FOUND':
      return 'no recording';
    case 'RECGATE_RECORDING_NOT_READY':
      return 'recording still processing';
    default:
      return `could not resolve its recording: ${code ? `${code}: ` : ''}${messageOf(err)}`;
  }
}

/** `--since [--until]`: Twilio's completed recordings in the range whose calls are registered. */
async function selectRange(
  admin: AdminContext,
  range: { since: Date; until: Date | undefined },
  add: (job: PrefetchJobInput) => void,
  skip: (what: string, reason: string) => void,
): Promise<void> {
  const recordings = await admin.upstream!.listRecordings({
    dateCreatedAfter: range.since,
    dateCreatedBefore: range.until,
  });
  for (const recording of recordings) {
    if (recording.status !== 'completed') continue;
    const call = await admin.callLog.get(recording.callSid);
    if (call === undefined) continue;
    const what = `${recording.sid} (call ${call.callSid})`;
    if (call.purgedAt !== null || (await admin.callLog.isPurged(recording.sid))) skip(what, 'purged');
    else if (call.recordingState === 'deleted' && call.recordingSid === recording.sid) {
      skip(what, 'deleted at Twilio');
    } else add({ recordingSid: recording.sid, callSid: recording.callSid, businessId: call.businessId });
  }
}

/** Steps 3 and 4: runs due jobs in this process and watches the queue until each of `jobs` has ended. */
async function runAndWait(
  admin: AdminContext,
  queue: PrefetchQueue,
  jobs: PrefetchJobInput[],
  options: PrefetchCommandOptions,
): Promise<Finished[]> {
  if (jobs.length === 0) return [];
  const prefetcher = new Prefetcher({
    queue,
    cache: admin.runtime!.cache,
    callLog: admin.callLog,
    state: admin.state,
    logger: admin.logger,
    concurrency: Math.max(1, admin.config.prefetchConcurrency),
    ...(admin.accounts === undefined
      ? {}
      : { accountOf: async (businessId: string) => (await admin.accounts!.account(businessId)).accountSid }),
  });
  const progress = new Progress(options.io, jobs.length);
  prefetcher.start();
  const finished: Finished[] = [];
  try {
    let pending = jobs;
    while (pending.length > 0) {
      const still: PrefetchJobInput[] = [];
      for (const job of pending) {
        const ended = await endOf(queue, job);
        if (ended === undefined) still.push(job);
        else {
          finished.push(ended);
          progress.finished(ended);
        }
      }
      pending = still;
      if (pending.length > 0) await new Promise((r) => setTimeout(r, options.pollMs ?? 100));
    }
  } finally {
    progress.stop();
    await prefetcher.close();
  }
  return finished;
}

/** How the job ended, or `undefined` while it runs. A job a gateway will retry has failed for this run. */
async function endOf(queue: PrefetchQueue, job: PrefetchJobInput): Promise<Finished | undefined> {
  const now = await queue.get(job.recordingSid);
  if (now === undefined) return { job, ok: false, reason: 'the job left the queue' };
  if (now.state === 'done') return { job, ok: true, reason: '' };
  if (now.state === 'failed') return { job, ok: false, reason: now.lastError ?? 'failed' };
  if (now.state === 'queued' && now.lastError !== null) {
    return { job, ok: false, reason: `${now.lastError} (the gateways will retry it)` };
  }
  return undefined;
}

/** A bar on a terminal; one line per job otherwise. */
class Progress {
  readonly #io: CommandIo;
  readonly #bar: SingleBar | undefined;

  constructor(io: CommandIo, total: number) {
    this.#io = io;
    if (io.isTTY) {
      this.#bar = new SingleBar({
        format: 'prefetch [{bar}] {value}/{total} {percentage}% | eta {eta_formatted}',
        stream: io.barStream ?? process.stderr,
        hideCursor: true,
        clearOnComplete: false,
      });
      this.#bar.start(total, 0);
    }
  }

  finished(f: Finished): void {
    if (this.#bar) this.#bar.increment();
    else this.#io.out(`${f.ok ? 'done' : 'FAIL'}  ${describe(f.job)}${f.ok ? '' : `: ${f.reason}`}`);
  }

  stop(): void {
    this.#bar?.stop();
  }
}

function describe(job: PrefetchJobInput): string {
  return `${job.recordingSid} (call ${job.callSid}, ${job.businessId})`;
}

function summarize(selected: Selected, finished: Finished[], io: CommandIo): number {
  const failed = finished.filter((f) => !f.ok);
  io.out(
    `queued ${selected.jobs.length}, done ${finished.length - failed.length}, failed ${failed.length}, skipped ${selected.skipped.length}`,
  );
  for (const f of failed) io.out(`failed ${describe(f.job)}: ${f.reason}`);
  return failed.length === 0 ? EXIT_OK : EXIT_FAILED;
}
