/**
 * Gateway configuration: CLI flags over environment variables over defaults, validated once where it
 * enters. Every option is documented with its default; the README's configuration table mirrors this file.
 */
import path from 'node:path';
import { z } from 'zod';
import { Sealer } from '../secrets/sealed.js';
import { type DatabaseTarget, parseDatabaseUrl } from './database-url.js';
import { parseDuration, parseSize } from './units.js';

const url = (field: string) =>
  z.string().refine((v) => /^https?:\/\/[^\s]+$/.test(v), { message: `${field} must be an http(s) URL` });

/** A size (`10GiB`, `500MB`, bytes as a number) or a share of the volume (`15%`); see `units.ts`. */
const size = (option: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    try {
      return parseSize(String(v), option);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

/** A duration (`30d`, `12h`), in milliseconds; a number is milliseconds already. */
const duration = (option: string) =>
  z.union([z.string(), z.number()]).transform((v, ctx) => {
    try {
      return typeof v === 'number' ? parseDuration(`${v}ms`, option) : parseDuration(v, option);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

const nonNegativeInt = (field: string) =>
  z.coerce
    .number({ message: `${field} must be a number` })
    .int(`${field} must be an integer`)
    .min(0, `${field} must be 0 or more`);

const positiveInt = (field: string) =>
  z.coerce
    .number({ message: `${field} must be a number` })
    .int(`${field} must be an integer`)
    .positive(`${field} must be positive`);

/**
 * A duration in milliseconds, written `500ms`, `5s`, `2m` or as bare seconds (`5`, `0.5`); 0 is allowed.
 * Numbers given by code are taken as milliseconds already.
 */
const durationMs = (field: string, maxMs: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' ? parseDurationMs(v) : v),
    z
      .number({ message: `${field} must look like 500ms, 5s, 2m or a number of seconds` })
      .int(`${field} must be a whole number of milliseconds`)
      .min(0, `${field} must not be negative`)
      .max(maxMs, `${field} must be at most ${maxMs / 1000} s`),
  );

/** `500ms`, `5s`, `2m` or bare seconds to milliseconds; NaN (rejected by the schema) for anything else. */
export function parseDurationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(text.trim());
  if (!m) return Number.NaN;
  const unit = { ms: 1, s: 1000, m: 60_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm'];
  return Math.round(Number(m[1]) * unit);
}

export const ConfigSchema = z
  .object({
    /** Interface to listen on. @default '127.0.0.1' */
    host: z.string().min(1, 'host must not be empty').default('127.0.0.1'),
    /** TCP port. @default 8080 */
    port: z.coerce
      .number()
      .int()
      .min(0, 'port must be 0..65535')
      .max(65535, 'port must be 0..65535')
      .default(8080),
    /** Worker processes sharing the port (node:cluster). @default 1 */
    workers: positiveInt('workers').max(64, 'workers must be at most 64').default(1),
    /** Data directory; recordings live in `{dataDir}/recordings`. @default './data' */
    dataDir: z.string().min(1, 'data-dir must not be empty').default('./data'),
    /** Call log: undefined = SQLite in the data dir; a postgres:// URL switches to PostgreSQL. */
    databaseUrl: z.string().min(1).optional(),
    /** Twilio REST base URL. @default 'https://api.twilio.com' */
    twilioApiBase: url('twilio-api-base').default('https://api.twilio.com'),
    twilioAccountSid: z.string().optional(),
    twilioAuthToken: z.string().optional(),
    twilioApiKey: z.string().optional(),
    twilioApiSecret: z.string().optional(),
    /** HS256 secret for bearer JWTs and playback-URL signatures. Required unless demo. */
    jwtSecret: z.string().optional(),
    /** Admin API token; the admin API is disabled when unset. */
    adminToken: z.string().optional(),
    /**
     * Key (32 bytes, hex or base64) sealing businesses' own Twilio credentials (src/secrets/sealed.ts).
     * Unset: businesses can use the main account and its subaccounts only. @default none
     */
    credentialsKey: z.string().optional(),
    /** Earlier keys (comma-separated), still opening credentials until `accounts rotate-key`. @default none */
    credentialsKeyPrevious: z.string().optional(),
    /** Bearer token /metrics requires; /metrics is open when unset (keep it off the public network then). */
    metricsToken: z.string().min(16, 'RECGATE_METRICS_TOKEN must be at least 16 characters').optional(),
    /** Runs an in-process emulator with demo data and generated secrets. @default false */
    demo: z.boolean().default(false),
    /** Public base URL used in playback URLs; defaults to the request's own origin. */
    publicUrl: url('public-url').optional(),
    /** Lifetime of playback URLs, seconds. @default 300 */
    playbackUrlTtlS: positiveInt('playback-url-ttl')
      .max(86400, 'playback-url-ttl must be at most 86400')
      .default(300),
    /** How long a request waits for another process's download lock, ms. @default 120000 */
    lockTimeoutMs: positiveInt('lock-timeout-ms').default(120_000),
    /**
     * Who guarantees one download per recording across processes: `fs` (kernel file locks, one host) or
     * `postgres` (advisory locks in the call log's PostgreSQL, several hosts over shared storage).
     * @default 'postgres' when the call log is PostgreSQL, else 'fs'
     */
    lockBackend: z.enum(['fs', 'postgres'], { message: 'lock-backend must be fs or postgres' }).optional(),
    /**
     * Most bytes finished recordings may take; past it, the least recently played are evicted. Bytes with a
     * unit (`10GiB`, `500MB`) or a share of the recordings volume (`15%`). @default unbounded
     */
    cacheMaxBytes: size('cache-max-bytes').optional(),
    /**
     * Free space to keep on the recordings volume; below it, the least recently played recordings are
     * evicted. Same forms as cacheMaxBytes. @default none
     */
    cacheMinFree: size('cache-min-free').optional(),
    /** Recordings nobody played for this long are evicted (`30d`, `12h`); in ms once parsed. @default never */
    cacheMaxAgeMs: duration('cache-max-age').optional(),
    /**
     * Keep the local copy of a recording Twilio reports deleted (recording-status webhook), instead of
     * removing it; it is still never served (the call answers RECGATE_RECORDING_GONE). @default false
     */
    keepAfterUpstreamDelete: z.boolean().default(false),
    /**
     * Directory of `{business_id}.pem` RSA private keys (PEM, PKCS#8) that open recordings Twilio encrypted
     * with Voice Recording Encryption; read at start (a bad file stops it), on SIGHUP and on a miss. Without
     * it, an encrypted recording answers RECGATE_RECORDING_ENCRYPTED. @default none
     */
    recordingKeysDir: z.string().min(1).optional(),
    /**
     * Keep an encrypted recording on disk as Twilio sent it (ciphertext and GCM tag, checked before it is
     * committed, with its wrapped key beside it) and decrypt every read, instead of storing the plaintext:
     * removing a business's key (then SIGHUP) then also closes its finished files. Needs
     * `recordingKeysDir` (refused without it). @default false
     */
    storeEncrypted: z.boolean().default(false),
    /**
     * Also store every play in the call log's `plays` table (always logged as an `event: "play"` line), for
     * `GET /api/admin/calls/{callSid}/plays`. @default false
     */
    auditDb: z.boolean().default(false),
    /**
     * Prefetch downloads each worker process runs at once: a signed `completed` recording-status webhook
     * queues the recording, so its first play is a hit. 0 turns prefetching off (the queue still fills).
     * @default 2
     */
    prefetchConcurrency: z.coerce
      .number({ message: 'prefetch-concurrency must be a number' })
      .int('prefetch-concurrency must be an integer')
      .min(0, 'prefetch-concurrency must be at least 0')
      .max(64, 'prefetch-concurrency must be at most 64')
      .default(2),
    /**
     * After SIGTERM, how long the gateway keeps serving with /readyz at 503 before it closes its listener,
     * so that load balancers stop sending it new connections first. @default 5000 (5 s)
     */
    drainDelayMs: durationMs('drain-delay', 3_600_000).default(5000),
    /**
     * Once the listener is closed, how long responses in flight may take to finish before their
     * connections are cut. @default 30000 (30 s)
     */
    shutdownTimeoutMs: durationMs('shutdown-timeout', 3_600_000).default(30_000),
    /**
     * Upstream downloads one process runs at once (per worker under --workers); cold requests beyond wait in
     * a queue fair across businesses. @default 16
     */
    upstreamConcurrency: positiveInt('upstream-concurrency').default(16),
    /**
     * Upstream downloads at once across every host sharing the PostgreSQL database; needs a postgres://
     * --database. @default none (only the per-process cap)
     */
    upstreamConcurrencyGlobal: positiveInt('upstream-concurrency-global').optional(),
    /** Cold requests one process lets wait for a download slot; beyond, RECGATE_UPSTREAM_BUSY. @default 1000 */
    upstreamQueueMax: nonNegativeInt('upstream-queue-max').default(1000),
    /**
     * Longest wait for a download slot, ms, before RECGATE_UPSTREAM_BUSY. Must be below lock-timeout-ms: the
     * download waits holding the recording's lock, and followers in other processes must not time out first.
     * @default 30000, or half of lock-timeout-ms when that is shorter (see {@link upstreamQueueTimeoutMs})
     */
    upstreamQueueTimeoutMs: positiveInt('upstream-queue-timeout-ms').optional(),
    /**
     * New upstream downloads a business may start per second, per host (divided among --workers); 0 turns the
     * limit off. Cache hits and requests joining a download never count. @default 10
     */
    coldDownloadRate: z.coerce
      .number({ message: 'cold-download-rate must be a number' })
      .min(0, 'cold-download-rate must be 0 or more')
      .default(10),
    /** New downloads a business may start at once after a quiet period (divided among --workers). @default 100 */
    coldDownloadBurst: positiveInt('cold-download-burst').default(100),
    /**
     * HEADs on recordings not cached that one process sends to Twilio at once (per worker under --workers);
     * requests for one recording share one. Beyond, a HEAD waits up to 5 s for its turn, then answers
     * RECGATE_UPSTREAM_BUSY. @default 16
     */
    coldHeadConcurrency: positiveInt('cold-head-concurrency').default(16),
    /**
     * Longest a client may take to send a whole request (headers and body), ms; answered 408 and closed
     * after it. Must be at least `headersTimeoutMs`. @default 30000
     */
    requestTimeoutMs: positiveInt('request-timeout-ms').default(30_000),
    /** Longest a client may take to send a request's headers, ms; answered 408 and closed after it. @default 10000 */
    headersTimeoutMs: positiveInt('headers-timeout-ms').default(10_000),
    /**
     * How long a connection with no request in progress stays open, ms: a new connection before its first
     * byte, and a keep-alive connection between requests. Longer than common load balancers' idle
     * timeout (60 s), so the gateway is never the side closing a connection the balancer is reusing.
     * @default 72000
     */
    idleTimeoutMs: positiveInt('idle-timeout-ms').default(72_000),
    /**
     * A response whose client has read nothing for this long is cut, ms (no progress, not total time: a
     * slow client that reads is never cut). 0 = never. @default 60000
     */
    sendTimeoutMs: nonNegativeInt('send-timeout-ms').default(60_000),
    /** Open connections per process at most; beyond it new ones are closed at once. 0 = no cap. @default 10000 */
    maxConnections: nonNegativeInt('max-connections').default(10_000),
    /** Largest request body accepted, bytes; larger ones get 413 RECGATE_PAYLOAD_TOO_LARGE. @default 65536 */
    bodyLimitBytes: positiveInt('body-limit').default(64 * 1024),
    /**
     * Authenticated API requests per second per business on this host (divided among `--workers`). 0 = no
     * limit. @default 200
     */
    apiRatePerS: z.coerce
      .number({ message: 'api-rate must be a number' })
      .min(0, 'api-rate must be 0 or more')
      .default(200),
    /**
     * Authenticated API requests a business may make at once after a quiet period, per host: room for a
     * stampede of the business's agents on one recording. @default 1000
     */
    apiBurst: positiveInt('api-burst').default(1000),
    /** Log level. @default 'info' */
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .superRefine((c, ctx) => {
    if (!c.demo && !c.jwtSecret) {
      ctx.addIssue({
        code: 'custom',
        path: ['jwtSecret'],
        message: 'RECGATE_JWT_SECRET is required (or use --demo)',
      });
    }
    try {
      sealerOf(c);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['credentialsKey'], message: (err as Error).message });
    }
    if (c.jwtSecret !== undefined && c.jwtSecret.length < 32) {
      ctx.addIssue({
        code: 'custom',
        path: ['jwtSecret'],
        message: 'RECGATE_JWT_SECRET must be at least 32 characters',
      });
    }
    let database: DatabaseTarget | undefined;
    try {
      database = parseDatabaseUrl(c.databaseUrl, c.dataDir);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['databaseUrl'], message: (err as Error).message });
    }
    if (c.lockBackend === 'postgres' && database?.kind !== 'postgres') {
      ctx.addIssue({
        code: 'custom',
        path: ['lockBackend'],
        message: 'lock-backend postgres needs a postgres:// --database',
      });
    }
    const bounded = c.cacheMaxBytes ?? c.cacheMinFree ?? c.cacheMaxAgeMs;
    if (bounded !== undefined && database?.kind === 'sqlite' && database.path === ':memory:') {
      ctx.addIssue({
        code: 'custom',
        path: ['cacheMaxBytes'],
        message:
          'cache limits keep their index in the call log, which an in-memory SQLite --database cannot share',
      });
    }
    if (c.storeEncrypted && c.recordingKeysDir === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['storeEncrypted'],
        message: 'store-encrypted needs --recording-keys-dir (without keys nothing encrypted is stored)',
      });
    }
    if (c.upstreamConcurrencyGlobal !== undefined && database?.kind !== 'postgres') {
      ctx.addIssue({
        code: 'custom',
        path: ['upstreamConcurrencyGlobal'],
        message: 'upstream-concurrency-global needs a postgres:// --database',
      });
    }
    if (c.upstreamQueueTimeoutMs !== undefined && c.upstreamQueueTimeoutMs >= c.lockTimeoutMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['upstreamQueueTimeoutMs'],
        message: 'upstream-queue-timeout-ms must be below lock-timeout-ms',
      });
    }
    if (c.headersTimeoutMs > c.requestTimeoutMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['headersTimeoutMs'],
        message: 'headers-timeout-ms must not exceed request-timeout-ms',
      });
    }
    if ((c.twilioApiKey === undefined) !== (c.twilioApiSecret === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['twilioApiKey'],
        message: 'TWILIO_API_KEY and TWILIO_API_SECRET go together',
      });
    }
  });

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** Reads the environment variables of the README's configuration table. Flags (already parsed) take precedence. */
export function configFromEnv(env: NodeJS.ProcessEnv): ConfigInput {
  const pick = (...names: string[]) => {
    for (const n of names) {
      const v = env[n];
      if (v !== undefined && v !== '') return v;
    }
    return undefined;
  };
  const flag = (v: string | undefined) =>
    v === undefined ? undefined : v === '1' || v.toLowerCase() === 'true';
  return stripUndefined({
    host: pick('RECGATE_HOST'),
    port: pick('RECGATE_PORT', 'PORT'),
    workers: pick('RECGATE_WORKERS'),
    dataDir: pick('RECGATE_DATA_DIR'),
    databaseUrl: pick('RECGATE_DATABASE_URL'),
    twilioApiBase: pick('TWILIO_API_BASE'),
    twilioAccountSid: pick('TWILIO_ACCOUNT_SID'),
    twilioAuthToken: pick('TWILIO_AUTH_TOKEN'),
    twilioApiKey: pick('TWILIO_API_KEY'),
    twilioApiSecret: pick('TWILIO_API_SECRET'),
    jwtSecret: pick('RECGATE_JWT_SECRET'),
    adminToken: pick('RECGATE_ADMIN_TOKEN'),
    credentialsKey: pick('RECGATE_CREDENTIALS_KEY'),
    credentialsKeyPrevious: pick('RECGATE_CREDENTIALS_KEY_PREVIOUS'),
    metricsToken: pick('RECGATE_METRICS_TOKEN'),
    demo: flag(pick('RECGATE_DEMO')),
    publicUrl: pick('RECGATE_PUBLIC_URL'),
    playbackUrlTtlS: pick('RECGATE_PLAYBACK_URL_TTL'),
    lockTimeoutMs: pick('RECGATE_LOCK_TIMEOUT_MS'),
    logLevel: pick('RECGATE_LOG_LEVEL'),
    lockBackend: pick('RECGATE_LOCK_BACKEND'),
    cacheMaxBytes: pick('RECGATE_CACHE_MAX_BYTES'),
    cacheMinFree: pick('RECGATE_CACHE_MIN_FREE'),
    cacheMaxAgeMs: pick('RECGATE_CACHE_MAX_AGE'),
    keepAfterUpstreamDelete: flag(pick('RECGATE_KEEP_AFTER_UPSTREAM_DELETE')),
    recordingKeysDir: pick('RECGATE_RECORDING_KEYS_DIR'),
    storeEncrypted: flag(pick('RECGATE_STORE_ENCRYPTED')),
    auditDb: flag(pick('RECGATE_AUDIT_DB')),
    prefetchConcurrency: pick('RECGATE_PREFETCH_CONCURRENCY'),
    drainDelayMs: pick('RECGATE_DRAIN_DELAY'),
    shutdownTimeoutMs: pick('RECGATE_SHUTDOWN_TIMEOUT'),
    upstreamConcurrency: pick('RECGATE_UPSTREAM_CONCURRENCY'),
    upstreamConcurrencyGlobal: pick('RECGATE_UPSTREAM_CONCURRENCY_GLOBAL'),
    upstreamQueueMax: pick('RECGATE_UPSTREAM_QUEUE_MAX'),
    upstreamQueueTimeoutMs: pick('RECGATE_UPSTREAM_QUEUE_TIMEOUT_MS'),
    coldDownloadRate: pick('RECGATE_COLD_DOWNLOAD_RATE'),
    coldDownloadBurst: pick('RECGATE_COLD_DOWNLOAD_BURST'),
    coldHeadConcurrency: pick('RECGATE_COLD_HEAD_CONCURRENCY'),
    requestTimeoutMs: pick('RECGATE_REQUEST_TIMEOUT_MS'),
    headersTimeoutMs: pick('RECGATE_HEADERS_TIMEOUT_MS'),
    idleTimeoutMs: pick('RECGATE_IDLE_TIMEOUT_MS'),
    sendTimeoutMs: pick('RECGATE_SEND_TIMEOUT_MS'),
    maxConnections: pick('RECGATE_MAX_CONNECTIONS'),
    bodyLimitBytes: pick('RECGATE_BODY_LIMIT'),
    apiRatePerS: pick('RECGATE_API_RATE'),
    apiBurst: pick('RECGATE_API_BURST'),
  }) as ConfigInput;
}

function stripUndefined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Merges flags over environment over defaults and validates; throws ConfigError naming each bad field. */
export function loadConfig(flags: ConfigInput, env: NodeJS.ProcessEnv = process.env): Config {
  const merged = { ...configFromEnv(env), ...stripUndefined(flags as Record<string, unknown>) };
  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => `${i.path.join('.') || 'config'}: ${i.message}`).join('; '),
    );
  }
  return { ...parsed.data, dataDir: path.resolve(parsed.data.dataDir) };
}

/**
 * What a gateway needs beyond what {@link ConfigSchema} checks (other commands, such as `token`, do without
 * it): the JWT secret and Twilio credentials. Returns the message naming the first one missing, or
 * undefined. The deploy checks (test/deploy) hold compose.yaml and the Kubernetes manifests to it too.
 */
export function missingGatewaySetting(
  config: Pick<Config, 'jwtSecret' | 'twilioAccountSid' | 'twilioAuthToken' | 'twilioApiKey'>,
): string | undefined {
  if (!config.jwtSecret) return 'jwtSecret is required';
  if (!config.twilioAccountSid) return 'TWILIO_ACCOUNT_SID is required';
  if (!config.twilioAuthToken && !config.twilioApiKey) {
    return 'TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) is required';
  }
  return undefined;
}

/** Throws {@link missingGatewaySetting}'s message, if any; afterwards the secrets are known to be set. */
export function assertGatewaySettings(
  config: Config,
): asserts config is Config & { jwtSecret: string; twilioAccountSid: string } {
  const missing = missingGatewaySetting(config);
  if (missing !== undefined) throw new Error(missing);
}

/** The admission queue's timeout: as configured, else 30 s or half the lock timeout, whichever is shorter. */
export function upstreamQueueTimeoutMs(
  config: Pick<Config, 'upstreamQueueTimeoutMs' | 'lockTimeoutMs'>,
): number {
  return config.upstreamQueueTimeoutMs ?? Math.max(1, Math.min(30_000, Math.floor(config.lockTimeoutMs / 2)));
}

export function recordingsDir(config: Pick<Config, 'dataDir'>): string {
  return path.join(config.dataDir, 'recordings');
}

/**
 * The sealer of businesses' own Twilio credentials, from `RECGATE_CREDENTIALS_KEY` and
 * `RECGATE_CREDENTIALS_KEY_PREVIOUS`; `undefined` when no key is set. Throws TypeError naming the variable.
 */
export function sealerOf(
  config: Pick<Config, 'credentialsKey' | 'credentialsKeyPrevious'>,
): Sealer | undefined {
  return Sealer.fromEnv({
    RECGATE_CREDENTIALS_KEY: config.credentialsKey,
    RECGATE_CREDENTIALS_KEY_PREVIOUS: config.credentialsKeyPrevious,
  });
}
