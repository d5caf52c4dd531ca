/**
 * What the admin commands (`recgate purge`, `prefetch`, `stats`) share: the configuration (flags over
 * environment, as `serve` and `doctor` read it), the call log, and the recording cache built by
 * {@link openCacheRuntime} on the same data dir, database and lock backend as the gateways, so a command
 * and running gateways see one cache. Log lines go to stderr (warnings and worse unless RECGATE_LOG_LEVEL
 * says otherwise); stdout carries only the command's report.
 *
 * Exit codes, for every admin command: 0 success, 1 failure (named on stderr), 2 bad usage.
 */
import type { Logger } from 'pino';
import type { AccountDirectory } from '../accounts/directory.js';
import type { CallLog } from '../call-log/call-log.js';
import { openCallLog } from '../call-log/index.js';
import { type Config, type ConfigInput, loadConfig } from '../config/config.js';
import { createError } from '../errors.js';
import { createLogger } from '../observability/logger.js';
import { openRecordingKeys } from '../recordings/decrypt/index.js';
import { RecordingState } from '../resolution/state.js';
import {
  type CacheRuntime,
  openCacheRuntime,
  openUpstreamRuntime,
  type UpstreamRuntime,
} from '../runtime.js';
import { UpstreamBreaker } from '../upstream/breaker.js';
import type { Upstream } from '../upstream/upstream.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** Where a command writes its report and its errors; a test passes its own. */
export interface CommandIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /**
   * Whether the progress bar's stream ({@link barStream}) is a terminal: then long runs draw a bar there
   * instead of writing one line per job to `out`.
   */
  isTTY: boolean;
  /** The stream the progress bar draws on. @default process.stderr */
  barStream?: NodeJS.WritableStream;
}

/** The streams {@link processIo} writes to: a terminal's have `isTTY` true. */
export interface CommandStreams {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/**
 * The process's streams as a command's {@link CommandIo}: the report on stdout, errors and the progress bar
 * on stderr. Whether to draw the bar is decided by stderr, the stream it draws on, so `recgate prefetch >
 * report.txt` in a terminal still shows the bar, and `2> log` gets no escape codes in the log.
 */
export const processIo = (streams: CommandStreams = process): CommandIo => ({
  out: (line) => streams.stdout.write(`${line}\n`),
  err: (line) => streams.stderr.write(`${line}\n`),
  isTTY: streams.stderr.isTTY === true,
  barStream: streams.stderr,
});

export interface AdminContext {
  config: Config;
  logger: Logger;
  callLog: CallLog;
  state: RecordingState;
  /** Present when {@link openAdmin} was asked for the cache. */
  runtime: CacheRuntime | undefined;
  /** Present when asked for, and Twilio credentials are configured. */
  upstream: (Upstream & { close(): Promise<void> }) | undefined;
  /** With the upstream: which account (and client) serves each business, as the gateways use it. */
  accounts: AccountDirectory | undefined;
  close(): Promise<void>;
}

/**
 * Stands in for Twilio when a command only removes (purge): the cache never starts a download in such a
 * process, and if something asked it to, the caller is told plainly rather than sent to Twilio without
 * credentials.
 */
const NO_DOWNLOADS: Pick<Upstream, 'fetchMedia'> = {
  fetchMedia: () =>
    Promise.reject(
      createError('RECGATE_UPSTREAM_UNAVAILABLE', { message: 'this command does not download recordings' }),
    ),
};

export function adminConfig(flags: ConfigInput, env: NodeJS.ProcessEnv = process.env): Config {
  return loadConfig(flags, env);
}

/** Opens the call log, and the cache and Twilio client when `needs` says so. */
export async function openAdmin(
  config: Config,
  needs: { cache: boolean; upstream: boolean },
  env: NodeJS.ProcessEnv = process.env,
): Promise<AdminContext> {
  const logger = createLogger({ level: env.RECGATE_LOG_LEVEL ?? 'warn', destination: process.stderr });
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  let upstreams: UpstreamRuntime | undefined;
  let runtime: CacheRuntime | undefined;
  try {
    if (needs.upstream) {
      // The same accounts and recording keys as the gateways', so downloads open the same way.
      upstreams = await openUpstreamRuntime(config, {
        logger,
        breaker: new UpstreamBreaker(),
        recordingKeys: openRecordingKeys(config.recordingKeysDir, logger),
      });
    }
    if (needs.cache) {
      const decryption = upstreams?.decryption;
      runtime = await openCacheRuntime(config, {
        upstream: upstreams?.accounts.media ?? NO_DOWNLOADS,
        ...(decryption === undefined
          ? {}
          : {
              mediaFor: (businessId: string) => decryption.mediaFor(businessId),
              decryptStored: decryption.decryptStored,
            }),
        logger,
      });
    }
  } catch (err) {
    await upstreams?.close();
    await callLog.close();
    throw err;
  }
  return {
    config,
    logger,
    callLog,
    // With the cache, a recording a download finds deleted at Twilio loses its local copies, as in serve.
    state: new RecordingState(
      callLog,
      runtime === undefined
        ? undefined
        : { cache: runtime.cache, keep: config.keepAfterUpstreamDelete, logger },
    ),
    runtime,
    upstream: upstreams?.upstream,
    accounts: upstreams?.accounts,
    close: async () => {
      await runtime?.close();
      await upstreams?.close();
      await callLog.close();
    },
  };
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
