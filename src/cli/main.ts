import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { JwtAuth, parseTtl } from '../auth/jwt.js';
import { ConfigError, configFromEnv, loadConfig } from '../config/config.js';
import { type CallSid, isCallSid } from '../sid.js';
import { type AccountsAction, runAccounts } from './accounts.js';
import { EXIT_USAGE, processIo } from './admin.js';
import { LOCK_PROBE_COMMAND, lockProbeChild, runDoctor } from './doctor.js';
import { type PrefetchSelection, runPrefetch } from './prefetch.js';
import { runPurge } from './purge.js';
import { runServe, type ServeOptions } from './serve.js';
import { runStats } from './stats.js';

function integer(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return Number(value);
  };
}

function callSid(name: string) {
  return (value: string): CallSid => {
    if (!isCallSid(value))
      throw new InvalidArgumentError(`${name} must be a call SID (CA and 32 hex digits)`);
    return value;
  };
}

/**
 * An admin command (`purge`, `prefetch`, `stats`): the data dir, database and lock backend options of
 * `serve`, and exit code 2 for bad usage (commander's own default is 1, which these commands keep for a
 * failed run).
 */
function adminCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--data-dir <dir>', 'data directory (RECGATE_DATA_DIR)')
    .option(
      '--database <url>',
      'postgres:// URL, or SQLite in the data dir by default (RECGATE_DATABASE_URL)',
    )
    .option('--lock-backend <fs|postgres>', 'download lock, as the gateways use (RECGATE_LOCK_BACKEND)')
    .exitOverride((err) => {
      if (err.exitCode === 0) throw err;
      throw new CommanderError(EXIT_USAGE, err.code, err.message);
    });
}

/**
 * A `--since` / `--until` value: a date (`2026-11-30`, midnight UTC; as `--until`, the end of that day) or
 * an ISO 8601 date-time with an offset.
 */
function dateBound(name: string, endOfDay: boolean) {
  return (value: string): Date => {
    const day = /^\d{4}-\d\d-\d\d$/.test(value);
    const ms = day ? Date.parse(`${value}T${endOfDay ? '23:59:59' : '00:00:00'}Z`) : Date.parse(value);
    if (
      (!day && !/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(value)) ||
      Number.isNaN(ms)
    ) {
      throw new InvalidArgumentError(
        `${name} must be a date (2026-11-30) or an ISO 8601 date-time with an offset`,
      );
    }
    return new Date(ms);
  };
}

function topCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 1000) {
    throw new InvalidArgumentError('--top must be an integer from 1 to 1000');
  }
  return n;
}

/** Exactly one of `--call`, `--business`, `--since`; `--until` only with `--since`. */
function prefetchSelection(
  opts: { call?: CallSid; business?: string; since?: Date; until?: Date },
  fail: (message: string) => never,
): PrefetchSelection {
  const given = [opts.call, opts.business, opts.since].filter((v) => v !== undefined).length;
  if (given !== 1) fail('give one of --call, --business or --since');
  if (opts.until !== undefined && opts.since === undefined) fail('--until goes with --since');
  if (opts.call !== undefined) return { kind: 'call', callSid: opts.call };
  if (opts.business !== undefined) return { kind: 'business', businessId: opts.business };
  const since = opts.since!;
  if (opts.until !== undefined && opts.until < since) fail('--until is before --since');
  return { kind: 'range', since, until: opts.until };
}

function adminFlags(opts: { dataDir?: string; database?: string; lockBackend?: string }) {
  return {
    dataDir: opts.dataDir,
    databaseUrl: opts.database,
    lockBackend: opts.lockBackend as 'fs' | 'postgres' | undefined,
  };
}

function number(name: string) {
  return (value: string): number => {
    if (!/^\d+(\.\d+)?$/.test(value)) throw new InvalidArgumentError(`${name} must be a non-negative number`);
    return Number(value);
  };
}

export interface CliOptions {
  /** Passed to `recgate serve`'s runServe; tests set the primary's restart delays here. @default {} */
  serve?: ServeOptions;
}

export function buildCli(options: CliOptions = {}): Command {
  const program = new Command('recgate')
    .description(
      'Serves Twilio call recordings to web apps: fetch once, stream to everyone, Range by the book.',
    )
    .showHelpAfterError()
    .exitOverride();

  program
    .command('serve')
    .description('run the gateway')
    .option('--host <host>', 'interface to listen on (RECGATE_HOST)')
    .option('--port <port>', 'TCP port (RECGATE_PORT / PORT)', integer('--port'))
    .option('--workers <n>', 'worker processes sharing the port (RECGATE_WORKERS)', integer('--workers'))
    .option('--data-dir <dir>', 'data directory; recordings in DIR/recordings (RECGATE_DATA_DIR)')
    .option(
      '--database <url>',
      'postgres:// URL, or SQLite in the data dir by default (RECGATE_DATABASE_URL)',
    )
    .option('--twilio-api-base <url>', 'Twilio REST base URL (TWILIO_API_BASE)')
    .option(
      '--public-url <url>',
      'public base URL for playback URLs and webhook signatures (RECGATE_PUBLIC_URL)',
    )
    .option(
      '--lock-timeout-ms <ms>',
      'how long a request waits for another download (RECGATE_LOCK_TIMEOUT_MS)',
      integer('--lock-timeout-ms'),
    )
    .option(
      '--lock-backend <fs|postgres>',
      'download lock: fs (one host) or postgres (several hosts) (RECGATE_LOCK_BACKEND)',
    )
    .option(
      '--cache-max-bytes <size>',
      'most bytes of finished recordings: 10GiB, 500MB or 15% of the volume (RECGATE_CACHE_MAX_BYTES)',
    )
    .option(
      '--cache-min-free <size>',
      'free space to keep on the volume: 5GiB or 10% (RECGATE_CACHE_MIN_FREE)',
    )
    .option(
      '--cache-max-age <duration>',
      'evict recordings nobody played for this long: 30d, 12h (RECGATE_CACHE_MAX_AGE)',
    )
    .option(
      '--upstream-concurrency <n>',
      'upstream downloads per process at once (RECGATE_UPSTREAM_CONCURRENCY)',
      integer('--upstream-concurrency'),
    )
    .option(
      '--upstream-concurrency-global <n>',
      'upstream downloads at once across hosts, PostgreSQL only (RECGATE_UPSTREAM_CONCURRENCY_GLOBAL)',
      integer('--upstream-concurrency-global'),
    )
    .option(
      '--upstream-queue-max <n>',
      'cold requests waiting for a download slot, per process (RECGATE_UPSTREAM_QUEUE_MAX)',
      integer('--upstream-queue-max'),
    )
    .option(
      '--upstream-queue-timeout-ms <ms>',
      'longest wait for a download slot (RECGATE_UPSTREAM_QUEUE_TIMEOUT_MS)',
      integer('--upstream-queue-timeout-ms'),
    )
    .option(
      '--cold-download-rate <n>',
      'new downloads per second per business and host, 0 = off (RECGATE_COLD_DOWNLOAD_RATE)',
    )
    .option(
      '--cold-download-burst <n>',
      'new downloads at once per business and host (RECGATE_COLD_DOWNLOAD_BURST)',
      integer('--cold-download-burst'),
    )
    .option(
      '--cold-head-concurrency <n>',
      'HEADs on recordings not cached sent to Twilio at once, per process (RECGATE_COLD_HEAD_CONCURRENCY)',
      integer('--cold-head-concurrency'),
    )
    .option(
      '--request-timeout-ms <ms>',
      'longest a client may take to send a whole request (RECGATE_REQUEST_TIMEOUT_MS)',
      integer('--request-timeout-ms'),
    )
    .option(
      '--headers-timeout-ms <ms>',
      "longest a client may take to send a request's headers (RECGATE_HEADERS_TIMEOUT_MS)",
      integer('--headers-timeout-ms'),
    )
    .option(
      '--idle-timeout-ms <ms>',
      'closes a connection with no request in progress after this (RECGATE_IDLE_TIMEOUT_MS)',
      integer('--idle-timeout-ms'),
    )
    .option(
      '--send-timeout-ms <ms>',
      'cuts a response whose client read nothing for this long; 0 = never (RECGATE_SEND_TIMEOUT_MS)',
      integer('--send-timeout-ms'),
    )
    .option(
      '--max-connections <n>',
      'open connections per process at most; 0 = no cap (RECGATE_MAX_CONNECTIONS)',
      integer('--max-connections'),
    )
    .option('--body-limit <bytes>', 'largest request body (RECGATE_BODY_LIMIT)', integer('--body-limit'))
    .option(
      '--api-rate <perS>',
      'API requests per second per business per host; 0 = no limit (RECGATE_API_RATE)',
      number('--api-rate'),
    )
    .option(
      '--api-burst <n>',
      'API requests a business may make at once, per host (RECGATE_API_BURST)',
      integer('--api-burst'),
    )
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (RECGATE_LOG_LEVEL)')
    .option(
      '--keep-after-upstream-delete',
      'keep the local copy of a recording Twilio reports deleted (RECGATE_KEEP_AFTER_UPSTREAM_DELETE=1)',
    )
    .option('--audit-db', 'also store every play in the plays table (RECGATE_AUDIT_DB=1)')
    .option(
      '--recording-keys-dir <dir>',
      'directory of {business_id}.pem private keys for encrypted recordings (RECGATE_RECORDING_KEYS_DIR)',
    )
    .option(
      '--store-encrypted',
      'keep encrypted recordings encrypted on disk and decrypt every read (RECGATE_STORE_ENCRYPTED=1)',
    )
    .option(
      '--prefetch-concurrency <n>',
      'prefetch downloads per worker, 0 = off (RECGATE_PREFETCH_CONCURRENCY)',
      integer('--prefetch-concurrency'),
    )
    .option(
      '--drain-delay <duration>',
      'after SIGTERM, serve with /readyz at 503 this long before closing the listener: 500ms, 5s, 1m (RECGATE_DRAIN_DELAY)',
    )
    .option(
      '--shutdown-timeout <duration>',
      'then let responses in flight finish for at most this long (RECGATE_SHUTDOWN_TIMEOUT)',
    )
    .addOption(
      new Option('--demo', 'in-process emulator with demo calls and generated secrets (RECGATE_DEMO=1)'),
    )
    .action(async (opts) => {
      const config = loadConfig({
        host: opts.host,
        port: opts.port,
        workers: opts.workers,
        dataDir: opts.dataDir,
        databaseUrl: opts.database,
        twilioApiBase: opts.twilioApiBase,
        publicUrl: opts.publicUrl,
        lockTimeoutMs: opts.lockTimeoutMs,
        logLevel: opts.logLevel,
        lockBackend: opts.lockBackend,
        cacheMaxBytes: opts.cacheMaxBytes,
        cacheMinFree: opts.cacheMinFree,
        cacheMaxAgeMs: opts.cacheMaxAge,
        keepAfterUpstreamDelete: opts.keepAfterUpstreamDelete,
        recordingKeysDir: opts.recordingKeysDir,
        storeEncrypted: opts.storeEncrypted,
        auditDb: opts.auditDb,
        prefetchConcurrency: opts.prefetchConcurrency,
        drainDelayMs: opts.drainDelay,
        shutdownTimeoutMs: opts.shutdownTimeout,
        upstreamConcurrency: opts.upstreamConcurrency,
        upstreamConcurrencyGlobal: opts.upstreamConcurrencyGlobal,
        upstreamQueueMax: opts.upstreamQueueMax,
        upstreamQueueTimeoutMs: opts.upstreamQueueTimeoutMs,
        coldDownloadRate: opts.coldDownloadRate,
        coldDownloadBurst: opts.coldDownloadBurst,
        coldHeadConcurrency: opts.coldHeadConcurrency,
        requestTimeoutMs: opts.requestTimeoutMs,
        headersTimeoutMs: opts.headersTimeoutMs,
        idleTimeoutMs: opts.idleTimeoutMs,
        sendTimeoutMs: opts.sendTimeoutMs,
        maxConnections: opts.maxConnections,
        bodyLimitBytes: opts.bodyLimit,
        apiRatePerS: opts.apiRate,
        apiBurst: opts.apiBurst,
        demo: opts.demo,
      });
      await runServe(config, options.serve);
    });

  program
    .command('emulator')
    .description('run the Twilio-compatible emulator alone (development, demos, benchmarks)')
    .option('--host <host>', 'interface to listen on', '127.0.0.1')
    .option('--port <port>', 'TCP port', integer('--port'), 4010)
    .option('--account-sid <sid>', 'Account SID clients authenticate as')
    .option('--auth-token <token>', 'auth token clients authenticate with')
    .option('--ttfb-ms <ms>', 'delay before the first media byte', integer('--ttfb-ms'), 0)
    .option(
      '--bandwidth <bytesPerS>',
      'media throttle in bytes per second (0 = unlimited)',
      integer('--bandwidth'),
      0,
    )
    .option('--no-range', 'ignore Range on media, as an upstream without Range support would')
    .option('--demo', 'seed demo calls')
    .action(async (opts) => {
      const { runEmulatorCommand } = await import('./emulator.js');
      await runEmulatorCommand(opts);
    });

  program
    .command('token')
    .description('print a signed JWT for a business (needs RECGATE_JWT_SECRET)')
    .requiredOption('--business <id>', 'business id (the business_id claim)')
    .option('--ttl <ttl>', 'lifetime: 3600, 30s, 15m, 1h, 7d', '1h')
    .action(async (opts) => {
      const secret = configFromEnv(process.env).jwtSecret;
      if (!secret) throw new ConfigError('RECGATE_JWT_SECRET is required to sign a token');
      const jwt = new JwtAuth(secret);
      process.stdout.write(`${await jwt.sign(opts.business, parseTtl(opts.ttl))}\n`);
    });

  program
    .command('doctor')
    .description('check this machine and configuration: data dir, lock, database, Twilio credentials')
    .option('--data-dir <dir>', 'data directory (RECGATE_DATA_DIR)')
    .option(
      '--database <url>',
      'postgres:// URL, or SQLite in the data dir by default (RECGATE_DATABASE_URL)',
    )
    .option('--twilio-api-base <url>', 'Twilio REST base URL (TWILIO_API_BASE)')
    .option('--lock-backend <fs|postgres>', 'download lock to check (RECGATE_LOCK_BACKEND)')
    .action(async (opts) => {
      const ok = await runDoctor({
        flags: {
          dataDir: opts.dataDir,
          databaseUrl: opts.database,
          twilioApiBase: opts.twilioApiBase,
          lockBackend: opts.lockBackend,
        },
        write: (line) => process.stdout.write(`${line}\n`),
      });
      process.exitCode = ok ? 0 : 1;
    });

  adminCommand(program, 'purge', "remove a call's recording from the cache and refuse it from now on")
    .requiredOption('--call <sid>', 'the call (CA…)', callSid('--call'))
    .action(async (opts) => {
      process.exitCode = await runPurge(opts.call, adminFlags(opts), processIo());
    });

  const prefetch = adminCommand(
    program,
    'prefetch',
    "download recordings before anyone asks: a call, a business's calls, or Twilio's recordings in a date range",
  );
  prefetch
    .option('--call <sid>', 'one call (CA…)', callSid('--call'))
    .option('--business <id>', "the business's calls in the call log")
    .option(
      '--since <date>',
      "Twilio's recordings created from this date or date-time",
      dateBound('--since', false),
    )
    .option('--until <date>', '… up to this date (inclusive) or date-time', dateBound('--until', true))
    .option('--twilio-api-base <url>', 'Twilio REST base URL (TWILIO_API_BASE)')
    .option('--no-run', "only queue the jobs, for the gateways' prefetchers")
    .action(async (opts) => {
      const selection = prefetchSelection(opts, (message) =>
        prefetch.error(`error: ${message}`, { exitCode: EXIT_USAGE, code: 'commander.usageError' }),
      );
      process.exitCode = await runPrefetch({
        selection,
        run: opts.run,
        flags: { ...adminFlags(opts), twilioApiBase: opts.twilioApiBase },
        io: processIo(),
      });
    });

  adminCommand(program, 'stats', 'cache size, hit ratio and the most played recordings, from the cache index')
    .option('--top <n>', 'how many recordings to list, 1 to 1000', topCount, 10)
    .option('--json', 'one JSON object instead of text')
    .action(async (opts) => {
      process.exitCode = await runStats({
        top: opts.top,
        json: opts.json === true,
        flags: adminFlags(opts),
        io: processIo(),
      });
    });

  const accounts = program
    .command('accounts')
    .description(
      "which Twilio account serves each business: the main one, a subaccount, or the business's own",
    );
  const accountsAction = (action: AccountsAction, opts: Parameters<typeof adminFlags>[0]) =>
    runAccounts(action, adminFlags(opts), processIo()).then((code) => {
      process.exitCode = code;
    });
  adminCommand(accounts, 'list', 'every business not on the main account')
    .option('--json', 'one JSON object instead of text')
    .action((opts) => accountsAction({ kind: 'list', json: opts.json === true }, opts));
  adminCommand(accounts, 'show', "one business's mapping, as JSON (never a secret)")
    .requiredOption('--business <id>', 'the business')
    .action((opts) => accountsAction({ kind: 'show', businessId: opts.business }, opts));
  const set = adminCommand(
    accounts,
    'set',
    'map a business to the main account, a subaccount, or its own account (credentials from RECGATE_ACCOUNT_AUTH_TOKEN, or RECGATE_ACCOUNT_API_KEY and RECGATE_ACCOUNT_API_SECRET)',
  )
    .requiredOption('--business <id>', 'the business')
    .option('--main', 'the main account (TWILIO_ACCOUNT_SID)')
    .option(
      '--subaccount <sid>',
      "a subaccount of the main account (AC…): the main credentials, the subaccount's SID",
    )
    .option('--own <sid>', "the business's own account (AC…), with its own credentials");
  set.action((opts) => {
    const given = [opts.main, opts.subaccount, opts.own].filter((v) => v !== undefined);
    if (given.length !== 1) {
      set.error('error: give one of --main, --subaccount or --own', {
        exitCode: EXIT_USAGE,
        code: 'commander.usageError',
      });
    }
    const target: Extract<AccountsAction, { kind: 'set' }>['target'] =
      opts.main === true
        ? { kind: 'main' }
        : opts.subaccount !== undefined
          ? { kind: 'subaccount', accountSid: opts.subaccount }
          : { kind: 'own', accountSid: opts.own };
    return accountsAction({ kind: 'set', businessId: opts.business, target }, opts);
  });
  adminCommand(accounts, 'remove', 'put a business back on the main account')
    .requiredOption('--business <id>', 'the business')
    .action((opts) => accountsAction({ kind: 'remove', businessId: opts.business }, opts));
  adminCommand(
    accounts,
    'rotate-key',
    're-seal every stored credential under RECGATE_CREDENTIALS_KEY',
  ).action((opts) => accountsAction({ kind: 'rotate-key' }, opts));

  program
    .command(LOCK_PROBE_COMMAND, { hidden: true })
    .argument('<id>')
    .action(async (id: string) => {
      await lockProbeChild(id);
    });

  return program;
}

export async function main(argv: string[], options: CliOptions = {}): Promise<void> {
  const program = buildCli(options);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help')
      return;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      process.exitCode = (err as { exitCode?: number }).exitCode ?? 1;
      return;
    }
    throw err;
  }
}
