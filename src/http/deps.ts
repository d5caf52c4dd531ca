import type { Logger } from 'pino';
import type { JwtAuth } from '../auth/jwt.js';
import type { PlaybackSigner } from '../auth/playback-url.js';
import type { CallLog } from '../call-log/call-log.js';
import type { Config } from '../config/config.js';
import type { RateLimiter } from '../limits/rate-limiter.js';
import type { RecordingCache } from '../recordings/cache.js';
import type { RecordingResolver } from '../resolution/resolver.js';
import type { RecordingState } from '../resolution/state.js';

/** Everything the HTTP layer needs, built once per process by `src/server.ts` (or by a test). */
export interface AppDeps {
  config: Pick<
    Config,
    | 'adminToken'
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
  >;
  logger: Logger;
  callLog: CallLog;
  resolver: RecordingResolver;
  /** The one writer of what is known about calls' recordings. */
  state: RecordingState;
  cache: RecordingCache;
  jwt: JwtAuth;
  signer: PlaybackSigner;
  /** Per-business budget of authenticated API requests; none means no limit. */
  apiLimiter?: RateLimiter;
}
