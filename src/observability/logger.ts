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

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
const bindingsOf = Symbol('recgate.lazyBindings');
const childOf = Symbol('recgate.lazyChild');
const lazyPrototypes = new WeakMap<Logger, object>();

interface LazyChild {
  [bindingsOf]: Bindings;
  [childOf]: Logger | undefined;
}

type Bindings = Record<string, unknown>;

/**
 * `parent.child(bindings)`, made only once something is logged through it. Fastify makes a child logger
 * for every request (to bind its id); a pino child costs a few microseconds (its bindings are serialized
 * and redacted), which a warm request that logs nothing at the configured level need not pay. The object
 * inherits everything else from `parent`; its level methods check the level first, so a line below it
 * makes no child either.
 */
export function lazyChild(parent: Logger, bindings: Bindings): Logger {
  let proto = lazyPrototypes.get(parent);
  if (proto === undefined) {
    proto = Object.create(parent) as object;
    const real = (self: LazyChild): Logger => {
      self[childOf] ??= parent.child(self[bindingsOf]);
      return self[childOf];
    };
    for (const level of LEVELS) {
      Object.defineProperty(proto, level, {
        value(this: LazyChild & Logger, ...args: unknown[]) {
          if (!this.isLevelEnabled(level)) return;
          (real(this)[level] as (...a: unknown[]) => void)(...args);
        },
      });
    }
    Object.defineProperty(proto, 'child', {
      value(this: LazyChild, childBindings: Bindings, options?: object) {
        return real(this).child(childBindings, options);
      },
    });
    Object.defineProperty(proto, 'bindings', {
      value(this: LazyChild) {
        return real(this).bindings();
      },
    });
    lazyPrototypes.set(parent, proto);
  }
  const lazy = Object.create(proto) as LazyChild;
  lazy[bindingsOf] = bindings;
  lazy[childOf] = undefined;
  return lazy as unknown as Logger;
}

/**
 * Whether a line at `level` is worth putting together for `log`. A host's logger (embedding) may not be
 * pino's and have no level check: then yes, and its own method decides.
 */
export function logsAt(log: Logger, level: 'info' | 'debug'): boolean {
  return typeof log.isLevelEnabled !== 'function' || log.isLevelEnabled(level);
}
