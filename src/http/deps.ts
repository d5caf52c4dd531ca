import type { Logger } from 'pino';
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
    | 'keepAfterUpstreamDelete'
    | 'requestTimeoutMs'
    | 'headersTimeoutMs'
    | 'idleTimeoutMs'
    | 'sendTimeoutMs'
    | 'maxConnections'
    | 'bodyLimitBytes'
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
   * What a business's HEAD asks instead of `upstream`: sizes of encrypted recordings are their plaintext's
   * (`recordings/decrypt/media.ts`). @default `upstream`
   */
  mediaFor?: (businessId: string) => Pick<Upstream, 'headMedia'>;
  jwt: JwtAuth;
  signer: PlaybackSigner;
  /** Where plays are recorded: the log, and with `--audit-db` the plays table. */
  audit: AuditTrail;
  /** Queues a recording's download before anyone asks (the recording-status webhook). */
  prefetch: Pick<PrefetchQueue, 'enqueue'>;
  /** Set when the process starts to stop (see src/lifecycle/drain.ts); absent in tests that never drain. */
  drain?: DrainState;
  /** Per-business budget of authenticated API requests; none means no limit. */
  apiLimiter?: RateLimiter;
}
