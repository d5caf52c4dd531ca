/**
 * `recgate emulator`: a Twilio REST API stand-in for development, demos, benchmarks and tests.
 *
 * It serves calls, recordings and recording media (real MP3 and WAV) the way `api.twilio.com` does, with
 * HTTP Basic auth, Twilio's JSON shapes and error bodies, Range requests, a throttle (time to first byte and
 * bandwidth) and injectable faults, and counts every media request so tests can prove "downloaded once".
 * The twilio SDK works against it with `client.api.baseUrl = emulator.url`.
 */
import type { Logger } from 'pino';
import { isAccountSid } from '../sid.js';
import { type DemoCall, seedDemo } from './demo.js';
import { type FaultInput, FaultQueue } from './faults.js';
import { invalid } from './invalid.js';
import { buildServer, type MediaStats, type Throttle } from './server.js';
import {
  type CreateAccountInput,
  type CreatedAccount,
  type CreatedRecording,
  type CreateRecordingInput,
  EmulatorState,
} from './state.js';

export type { GeneratedMp3, GeneratedWav, Mp3Options, WavOptions } from './audio.js';
export { generateMp3, generateWav, minMp3Bytes } from './audio.js';

export { DEMO_PROCESSING_MS, type DemoCall, type DemoScenario, seedDemo } from './demo.js';
export type { FaultInput, FaultKind } from './faults.js';
export { FAULT_KINDS, HTML_FAULT_PAGE } from './faults.js';
export type {
  CallDirection,
  CreateAccountInput,
  CreatedAccount,
  CreatedRecording,
  CreateRecordingInput,
  CreateStatus,
} from './state.js';

/** The account SID an emulator answers to unless told otherwise. */
export const DEFAULT_ACCOUNT_SID = `AC${'a'.repeat(32)}`;
/** The auth token an emulator accepts unless told otherwise. */
export const DEFAULT_AUTH_TOKEN = 'emulator-auth-token';
export const DEFAULT_EMULATOR_PORT = 4010;

export interface EmulatorOptions {
  /** Interface to listen on. @default '127.0.0.1' */
  host?: string;
  /** Port; 0 picks a free one. @default 4010 */
  port?: number;
  /** The account (`AC` + 32 hex digits) the REST API serves. @default DEFAULT_ACCOUNT_SID */
  accountSid?: string;
  /** Password for Basic auth with the account SID. @default DEFAULT_AUTH_TOKEN */
  authToken?: string;
  /** API keys also accepted for Basic auth: key SID (`SK…`) to secret. @default {} */
  apiKeys?: Record<string, string>;
  /** Delay before a media response's headers and first byte, in ms. @default 0 */
  ttfbMs?: number;
  /** Media bytes per second per response; 0 is unlimited. @default 0 */
  bandwidth?: number;
  /** Honour Range on media and advertise `Accept-Ranges: bytes`; off, Range is ignored (200). @default true */
  rangeSupport?: boolean;
  /** Seed the demo calls of {@link seedDemo} after starting. @default false */
  demo?: boolean;
  /** Where the emulator logs; `false` keeps it silent. @default false */
  logger?: Logger | false;
}

export interface EmulatorStats {
  /** GET media requests per recording SID (any extension), counted on arrival, faulted or failed or not. HEAD is not counted. */
  media_requests: Record<string, number>;
  total_media_requests: number;
  /**
   * Body bytes of GET media responses per recording SID, counted as the socket takes them: a partial body
   * (a fault, or a client that went away) counts what was sent, and fault bodies (`html_page`) count too.
   * A recording no body byte was sent for has no entry.
   */
  media_bytes: Record<string, number>;
  /** Sum of `media_bytes`. */
  total_media_bytes: number;
  /** HEAD media requests per recording SID (never counted in `media_requests`). */
  head_requests: Record<string, number>;
  /** Sum of `head_requests`. */
  total_head_requests: number;
  /**
   * GET media requests per account whose credentials made them (the main account for its API keys), then
   * per recording SID: shows which credentials fetched a recording.
   */
  media_requests_by_credential: Record<string, Record<string, number>>;
  /**
   * GET media requests per account SID named in the path, then per recording SID. Both counters include
   * requests answered 404 because the recording is not in that account; requests whose credentials may not
   * reach the account named are refused before (404) and not counted.
   */
  media_requests_by_account: Record<string, Record<string, number>>;
  /** GET media requests being answered now, from arrival until the response closes. */
  active_media_requests: number;
  /** The most GET media requests answered at once since start or the last reset. */
  max_concurrent_media_requests: number;
}

export interface ThrottleSettings {
  ttfbMs?: number;
  bandwidth?: number;
  rangeSupport?: boolean;
}

export interface Emulator {
  /** Base URL, e.g. `http://127.0.0.1:4010`: what `TWILIO_API_BASE` or `client.api.baseUrl` should be. */
  readonly url: string;
  readonly port: number;
  readonly accountSid: string;
  readonly authToken: string;
  readonly apiKeys: Readonly<Record<string, string>>;
  /** The calls {@link seedDemo} created when started with `demo: true`; empty otherwise. */
  readonly demoCalls: readonly DemoCall[];
  /**
   * Creates a call and (unless `status: "absent"`) a recording with generated MP3 media, exactly as
   * `POST /__emulator/recordings` does. Throws RECGATE_INVALID_REQUEST naming the bad field.
   */
  createRecording(input?: CreateRecordingInput): Promise<CreatedRecording>;
  /**
   * Registers an RSA public key (PEM) for Voice Recording Encryption, as `POST /__emulator/public-keys`
   * does; resolves to its `CR…` SID, for `createRecording({encrypt_with})`.
   */
  registerPublicKey(input: { public_key: string; sid?: string }): Promise<string>;
  /**
   * Adds an account (by default a subaccount of the main one), exactly as `POST /__emulator/accounts` does.
   * Throws RECGATE_INVALID_REQUEST naming the bad field.
   */
  createAccount(input?: CreateAccountInput): Promise<CreatedAccount>;
  /** Queues a fault for upcoming GET media requests, as `POST /__emulator/faults` does. */
  addFault(input: FaultInput): void;
  /** Media request and byte counters since start or the last {@link reset}; `GET /__emulator/stats` answers the same. */
  stats(): EmulatorStats;
  /** Changes the throttle for responses that start from now on. */
  setThrottle(settings: ThrottleSettings): void;
  /** Forgets counters and pending faults (calls and recordings stay). */
  reset(): void;
  /** Stops listening, cuts open connections (stalled ones too) and resolves when the server is down. */
  close(): Promise<void>;
}

export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? DEFAULT_EMULATOR_PORT;
  const accountSid = options.accountSid ?? DEFAULT_ACCOUNT_SID;
  const authToken = options.authToken ?? DEFAULT_AUTH_TOKEN;
  const apiKeys = { ...(options.apiKeys ?? {}) };
  if (typeof host !== 'string' || host.length === 0) invalid('options.host must be a non-empty string');
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    invalid('options.port must be an integer from 0 to 65535');
  }
  if (!isAccountSid(accountSid)) invalid('options.accountSid must match ^AC[0-9a-f]{32}$');
  if (typeof authToken !== 'string' || authToken.length === 0) {
    invalid('options.authToken must be a non-empty string');
  }
  for (const [key, secret] of Object.entries(apiKeys)) {
    if (!/^SK[0-9a-zA-Z]{32}$/.test(key))
      invalid(`options.apiKeys: key ${key} must match ^SK[0-9a-zA-Z]{32}$`);
    if (typeof secret !== 'string' || secret.length === 0) {
      invalid(`options.apiKeys.${key} must be a non-empty string`);
    }
  }
  const throttle: Throttle = { ttfbMs: 0, bandwidth: 0, rangeSupport: true };
  applyThrottle(
    throttle,
    { ttfbMs: options.ttfbMs, bandwidth: options.bandwidth, rangeSupport: options.rangeSupport },
    'options',
  );
  const logger = options.logger ? options.logger.child({ component: 'emulator' }) : false;

  let baseUrl = '';
  const state = new EmulatorState(accountSid, () => baseUrl, authToken);
  const faults = new FaultQueue();
  const stats: MediaStats = {
    requests: new Map(),
    heads: new Map(),
    bytes: new Map(),
    byCredential: new Map(),
    byAccount: new Map(),
    active: 0,
    maxActive: 0,
  };
  let signalClosing = () => {};
  const closing = new Promise<void>((resolve) => {
    signalClosing = resolve;
  });
  const statsJson = (): EmulatorStats => {
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    return {
      media_requests: Object.fromEntries(stats.requests),
      total_media_requests: sum(stats.requests),
      media_bytes: Object.fromEntries(stats.bytes),
      total_media_bytes: sum(stats.bytes),
      head_requests: Object.fromEntries(stats.heads),
      total_head_requests: sum(stats.heads),
      media_requests_by_credential: nested(stats.byCredential),
      media_requests_by_account: nested(stats.byAccount),
      active_media_requests: stats.active,
      max_concurrent_media_requests: stats.maxActive,
    };
  };
  const reset = () => {
    stats.requests.clear();
    stats.heads.clear();
    stats.bytes.clear();
    stats.byCredential.clear();
    stats.byAccount.clear();
    // Requests still being answered stay counted; the peak starts again from them.
    stats.maxActive = stats.active;
    faults.clear();
  };

  const app = buildServer({
    state,
    faults,
    throttle,
    stats,
    authToken,
    apiKeys,
    logger,
    closing,
    statsJson,
    reset,
  });
  await app.listen({ host, port });
  const address = app.server.address();
  const boundPort = typeof address === 'object' && address !== null ? address.port : port;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  baseUrl = `http://${urlHost}:${boundPort}`;
  if (logger) logger.info({ url: baseUrl, accountSid }, 'Twilio emulator listening');

  let closed = false;
  const demoCalls: DemoCall[] = [];
  const emulator: Emulator = {
    url: baseUrl,
    port: boundPort,
    accountSid,
    authToken,
    apiKeys,
    demoCalls,
    async createRecording(input) {
      return state.create(input ?? {});
    },
    async registerPublicKey(input) {
      return state.registerPublicKey(input);
    },
    async createAccount(input) {
      return state.createAccount(input ?? {});
    },
    addFault(input) {
      faults.add(input);
    },
    stats: statsJson,
    setThrottle(settings) {
      applyThrottle(throttle, settings, 'settings');
    },
    reset,
    async close() {
      if (closed) return;
      closed = true;
      signalClosing();
      await app.close();
      state.dropCaches();
    },
  };
  if (options.demo) {
    try {
      demoCalls.push(...(await seedDemo(emulator)));
    } catch (err) {
      await emulator.close();
      throw err;
    }
    if (logger) logger.info({ calls: demoCalls.length }, 'demo calls seeded');
  }
  return emulator;
}

function applyThrottle(target: Throttle, settings: ThrottleSettings, name: string): void {
  const { ttfbMs, bandwidth, rangeSupport } = settings;
  if (ttfbMs !== undefined && (!Number.isFinite(ttfbMs) || ttfbMs < 0)) {
    invalid(`${name}.ttfbMs must be a non-negative number`);
  }
  if (bandwidth !== undefined && (!Number.isFinite(bandwidth) || bandwidth < 0)) {
    invalid(`${name}.bandwidth must be a non-negative number (0 = unlimited)`);
  }
  if (rangeSupport !== undefined && typeof rangeSupport !== 'boolean')
    invalid(`${name}.rangeSupport must be a boolean`);
  if (ttfbMs !== undefined) target.ttfbMs = ttfbMs;
  if (bandwidth !== undefined) target.bandwidth = bandwidth;
  if (rangeSupport !== undefined) target.rangeSupport = rangeSupport;
}

function nested(counters: Map<string, Map<string, number>>): Record<string, Record<string, number>> {
  return Object.fromEntries([...counters].map(([key, counts]) => [key, Object.fromEntries(counts)]));
}
