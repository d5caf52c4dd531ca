import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { AccountDirectory } from '../accounts/directory.js';
import type { AccountStore } from '../accounts/store.js';
import type { JwtAuth } from '../auth/jwt.js';
import type { PlaybackSigner } from '../auth/playback-url.js';
import type { CallLog } from '../call-log/call-log.js';
import type { Config } from '../config/config.js';
import type { DrainState } from '../lifecycle/drain.js';
import type { RateLimiter } from '../limits/rate-limiter.js';
import type { AuditTrail } from '../observability/audit.js';
import type { PrefetchQueue } from '../prefetch/queue.js';
import type { RecordingCache } from '../recordings/cache.js';
import type { RecordingResolver } from '../resolution/resolver.js';
import type { RecordingState } from '../resolution/state.js';
import type { Sealer } from '../secrets/sealed.js';
import type { Upstream } from '../upstream/upstream.js';

/** Everything the HTTP layer needs, built once per process by `src/server.ts` (or by a test). */
export interface AppDeps {
  config: Pick<
    Config,
    | 'adminToken'
    | 'metricsToken'
    | 'publicUrl'
    | 'playbackUrlTtlS'
    | 'twilioAuthToken'
    | 'demo'
    | 'requestTimeoutMs'
    | 'headersTimeoutMs'
    | 'idleTimeoutMs'
    | 'sendTimeoutMs'
    | 'maxConnections'
    | 'bodyLimitBytes'
    | 'coldHeadConcurrency'
  >;
  logger: Logger;
  callLog: CallLog;
  resolver: RecordingResolver;
  /** The one writer of what is known about calls' recordings. */
  state: RecordingState;
  cache: RecordingCache;
  /** For a HEAD on a recording not cached: the media's metadata, without a download. */
  upstream: Pick<Upstream, 'headMedia'>;
  /**
   * The business → Twilio account mapping: which account's client serves a HEAD, which auth token checks a
   * webhook, and what `/api/admin/businesses/{id}/twilio-account` manages. Absent: the main account serves
   * every business, and those admin routes answer 404 RECGATE_ROUTE_NOT_FOUND.
   */
  accounts?: {
    directory: Pick<
      AccountDirectory,
      'mainAccountSid' | 'account' | 'forAccount' | 'webhookToken' | 'forget'
    >;
    store: AccountStore;
    /** Seals own credentials; without it, storing them answers RECGATE_CREDENTIALS_KEY_MISSING. */
    sealer: Sealer | undefined;
  };
  /**
   * What a business's HEAD asks for a recording in `account`, instead of that account's client: sizes of
   * encrypted recordings are their plaintext's (`recordings/decrypt/media.ts`). @default the account's client
   */
  mediaFor?: (businessId: string, account: string | undefined) => Pick<Upstream, 'headMedia'>;
  jwt: JwtAuth;
  signer: PlaybackSigner;
  /** Where plays are recorded: the log, and with `--audit-db` the plays table. */
  audit: AuditTrail;
  /**
   * Queues a recording's download before anyone asks (the recording-status webhook); absent when the call
   * log has no queue (an in-memory SQLite database).
   */
  prefetch?: Pick<PrefetchQueue, 'enqueue'>;
  /** Set when the process starts to stop (see src/lifecycle/drain.ts); absent in tests that never drain. */
  drain?: DrainState;
  /** Per-business budget of authenticated API requests; none means no limit. */
  apiLimiter?: RateLimiter;
  /**
   * The embedding app's own authentication (src/embed): the business a request acts for, or `null` when it
   * has no valid credential. Replaces the bearer JWT on the calls routes; a download still also accepts its
   * signed playback URL. @default none: bearer JWTs signed with the JWT secret
   */
  authenticate?: (request: FastifyRequest) => Promise<string | null | undefined> | string | null | undefined;
}
