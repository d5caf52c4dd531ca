import { type Logger, type LoggerOptions, pino } from 'pino';

/**
 * Paths pino blanks out wherever they appear in a log line. Secrets never reach a log: the Twilio auth
 * token and API secret, the JWT and admin secrets, Authorization headers, and playback URLs' signatures.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-twilio-signature"]',
  'headers.authorization',
  'authorization',
  'authToken',
  'apiSecret',
  'jwtSecret',
  'adminToken',
  'metricsToken',
  'password',
  'token',
  'sig',
  '*.authToken',
  '*.apiSecret',
  '*.jwtSecret',
  '*.adminToken',
  '*.metricsToken',
  '*.password',
  '*.token',
  '*.sig',
];

/** Query parameters that authenticate a URL by themselves; stripped from any URL before it is logged. */
const SECRET_QUERY = /([?&](?:sig|token|access_token)=)[^&#]*/gi;

export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[Redacted]');
}

export interface LoggerConfig {
  level?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read them back. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(config: LoggerConfig = {}): Logger {
  const options: LoggerOptions = {
    level: config.level ?? process.env.RECGATE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return config.destination ? pino(options, config.destination) : pino(options);
}
