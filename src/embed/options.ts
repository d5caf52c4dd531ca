/**
 * What an embedding app passes to `createRecgate` (src/embed/recgate.ts), and how it becomes the gateway's
 * own configuration: one set of defaults and one validation (src/config/config.ts), so an embedded recgate
 * behaves as `recgate serve` does with the same settings.
 */
import type { IncomingMessage } from 'node:http';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { type Config, ConfigError, type ConfigInput, loadConfig } from '../config/config.js';

/**
 * The host app's own authentication: the business a request acts for, or `null` (or `undefined`) when it
 * has no valid credential, which answers 401 RECGATE_UNAUTHENTICATED. It receives the Node request as the
 * host's framework sees it (Express's `req`, with its session and cookies), and recgate's Fastify request
 * (in a Fastify host, the host's own request, with its decorations). A throw, or a value that is not a
 * business id (`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`), answers 500 RECGATE_INTERNAL and is logged.
 *
 * It authenticates the calls routes and the download; a download also accepts a signed playback URL, which
 * is checked first.
 */
export type AuthenticateHook<Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  request: FastifyRequest,
) => string | null | undefined | Promise<string | null | undefined>;

/** Twilio credentials; an auth token, or an API key and its secret. */
export interface TwilioOptions {
  /** The account whose recordings are served. @default env `TWILIO_ACCOUNT_SID`; required */
  accountSid?: string;
  /** @default env `TWILIO_AUTH_TOKEN` */
  authToken?: string;
  /** With `apiSecret`, instead of the auth token. @default env `TWILIO_API_KEY` */
  apiKey?: string;
  /** @default env `TWILIO_API_SECRET` */
  apiSecret?: string;
  /** Twilio's REST base URL (the emulator's in development). @default env `TWILIO_API_BASE`, else `https://api.twilio.com` */
  apiBase?: string;
}

/** The local recording cache's bounds (see the README's "Bounded disk"). */
export interface CacheOptions {
  /** Most bytes the recordings may take (`10GiB`, `15%` of the volume, or a number of bytes). @default unbounded */
  maxBytes?: string | number;
  /** Free space to keep on the recordings volume (same forms). @default none */
  minFree?: string | number;
  /** Recordings nobody played for this long are evicted (`30d`, `12h`, or milliseconds). @default never */
  maxAge?: string | number;
}

/**
 * Options of `createRecgate` and of the `fastifyRecgate` plugin. Each one left out falls back to the
 * environment variable `recgate serve` reads for it (the README's configuration table), then to its default.
 */
export interface RecgateOptions<Req extends IncomingMessage = IncomingMessage> {
  /**
   * Signs playback URLs and, with the default `authenticate`, verifies bearer JWTs (HS256, claim
   * `business_id`). At least 32 characters. @default env `RECGATE_JWT_SECRET`; required
   */
  jwtSecret?: string;
  /** The host app's authentication (see {@link AuthenticateHook}). @default bearer JWTs signed with `jwtSecret` */
  authenticate?: AuthenticateHook<Req>;
  /** Twilio credentials. @default from the environment */
  twilio?: TwilioOptions;
  /** Data directory; recordings are stored in `{dataDir}/recordings`. @default env `RECGATE_DATA_DIR`, else `./data` */
  dataDir?: string;
  /**
   * The call log: a `postgres://` URL, or `sqlite:PATH`. The download lock and the cache index live
   * beside it. @default env `RECGATE_DATABASE_URL`, else a SQLite file in `dataDir`
   */
  database?: string;
  /** Bounds of the recording cache. @default unbounded */
  cache?: CacheOptions;
  /**
   * Where the Node handler and the Express middleware serve the routes (`/recordings` serves
   * `/recordings/api/calls/…`). The Fastify plugin takes Fastify's own `prefix` at `register` instead.
   * @default '' (the routes at `/api/calls/…`)
   */
  prefix?: string;
  /** Origin (and path) playback URLs start with. @default env `RECGATE_PUBLIC_URL`, else the request's own origin */
  publicUrl?: string;
  /** Lifetime of playback URLs, seconds (1 to 86400). @default env `RECGATE_PLAYBACK_URL_TTL`, else 300 */
  playbackUrlTtlS?: number;
  /** Where recgate logs (a pino logger, such as Fastify's `app.log`). @default a pino logger to stdout at `logLevel` */
  logger?: Logger;
  /** Level of the default logger. @default env `RECGATE_LOG_LEVEL`, else 'info' */
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /**
   * Any other setting of `recgate serve`, by its name in the configuration (`lockBackend`,
   * `upstreamConcurrency`, `apiRatePerS`, …); the options above take precedence. @default none
   */
  settings?: Partial<ConfigInput>;
  /** The environment the defaults are read from. @default process.env */
  env?: NodeJS.ProcessEnv;
}

/** Option names as an embedder writes them, for the configuration fields a validation message names. */
const OPTION_NAMES: Record<string, string> = {
  jwtSecret: 'options.jwtSecret',
  twilioAccountSid: 'options.twilio.accountSid',
  twilioAuthToken: 'options.twilio.authToken',
  twilioApiKey: 'options.twilio.apiKey',
  twilioApiSecret: 'options.twilio.apiSecret',
  twilioApiBase: 'options.twilio.apiBase',
  dataDir: 'options.dataDir',
  databaseUrl: 'options.database',
  cacheMaxBytes: 'options.cache.maxBytes',
  cacheMinFree: 'options.cache.minFree',
  cacheMaxAgeMs: 'options.cache.maxAge',
  publicUrl: 'options.publicUrl',
  playbackUrlTtlS: 'options.playbackUrlTtlS',
  logLevel: 'options.logLevel',
};

/** The prefix as given, checked: empty, or `/segment[/segment…]` without a trailing slash. */
export function checkPrefix(prefix: unknown): string {
  if (prefix === undefined || prefix === '') return '';
  if (typeof prefix !== 'string' || !/^(?:\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$/.test(prefix)) {
    throw new TypeError('options.prefix must be empty or a path like "/recordings" (no trailing slash)');
  }
  return prefix;
}

/**
 * The gateway configuration these options describe, validated; throws a TypeError that names each bad
 * option. Neither a listener nor the admin API is part of an embedded recgate, so their settings stay unused.
 */
export function configFromOptions(options: RecgateOptions<never>): Config {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  if (options.authenticate !== undefined && typeof options.authenticate !== 'function') {
    throw new TypeError('options.authenticate must be a function (request) => business id | null');
  }
  checkPrefix(options.prefix);
  const twilio = options.twilio ?? {};
  const flags: ConfigInput = {
    ...options.settings,
    jwtSecret: options.jwtSecret,
    twilioAccountSid: twilio.accountSid,
    twilioAuthToken: twilio.authToken,
    twilioApiKey: twilio.apiKey,
    twilioApiSecret: twilio.apiSecret,
    twilioApiBase: twilio.apiBase,
    dataDir: options.dataDir,
    databaseUrl: options.database,
    cacheMaxBytes: options.cache?.maxBytes,
    cacheMinFree: options.cache?.minFree,
    cacheMaxAgeMs: options.cache?.maxAge,
    publicUrl: options.publicUrl,
    playbackUrlTtlS: options.playbackUrlTtlS,
    logLevel: options.logLevel,
    // Never the demo: it generates secrets and an emulator, which only `recgate serve --demo` prints.
    demo: false,
  };
  let config: Config;
  try {
    config = loadConfig(flags, options.env ?? process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const message = err.message.replace(/(^|; )([A-Za-z]+):/g, (all, sep: string, field: string) =>
      OPTION_NAMES[field] === undefined ? all : `${sep}${OPTION_NAMES[field]}:`,
    );
    throw new TypeError(`recgate: ${message}`);
  }
  if (!config.twilioAccountSid) {
    throw new TypeError('recgate: options.twilio.accountSid is required (or TWILIO_ACCOUNT_SID)');
  }
  if (!config.twilioAuthToken && !config.twilioApiKey) {
    throw new TypeError(
      'recgate: options.twilio.authToken (or apiKey and apiSecret) is required (or TWILIO_AUTH_TOKEN)',
    );
  }
  return config;
}
