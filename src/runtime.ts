/**
 * The runtime pieces for one configuration that the gateway (`server.ts`) and the admin commands
 * (`cli/admin.ts`) share, so a command works on the very same accounts, keys, files, locks and index as the
 * gateways running beside it:
 * - {@link openUpstreamRuntime}: the main Twilio client, the account store and directory (which account
 *   serves each business), and decryption over them;
 * - {@link openCacheRuntime}: the download lock backend, the store on the recordings directory, the cache
 *   index and its evictor (bounded disk), and the cache itself.
 *
 * The call log must be open (and migrated) first: the PostgreSQL lock's fencing table and the cache index
 * live in its schema.
 */
import type { Logger } from 'pino';
import { AccountDirectory, type AccountDirectoryOptions } from './accounts/directory.js';
import { openAccountStore } from './accounts/open.js';
import type { AccountStore } from './accounts/store.js';
import { type DatabaseTarget, parseDatabaseUrl } from './call-log/index.js';
import { type Config, recordingsDir, sealerOf } from './config/config.js';
import { type CacheIndex, openCacheIndex } from './recordings/cache-index/open.js';
import { type Decryption, openDecryption, type RecordingKeys } from './recordings/decrypt/index.js';
import { Evictor, type EvictorOptions } from './recordings/eviction.js';
import {
  type CacheEventHandler,
  createRecordingCache,
  type DecryptStored,
  FsLocker,
  FsRecordingStore,
  type LocalRecordingCache,
  type RecordingStore,
  type UpstreamGateOptions,
} from './recordings/index.js';
import type { Locker } from './recordings/lock/lock.js';
import type { Sealer } from './secrets/sealed.js';
import type { UpstreamBreaker } from './upstream/breaker.js';
import { TwilioClient } from './upstream/twilio-client.js';
import type { Upstream } from './upstream/upstream.js';

export interface UpstreamRuntimeOptions {
  logger: Logger;
  /** The main account's breaker, shared by its subaccounts' clients. */
  breaker: UpstreamBreaker;
  /** Told when an own account's breaker opens or closes (metrics). @default none */
  onOwnBreakerChange?: AccountDirectoryOptions['onOwnBreakerChange'];
  /** What every account's client shares (base URL, timeouts, hooks); the logger is added. @default base URL from config */
  clientDefaults?: AccountDirectoryOptions['clientDefaults'];
  /** The businesses' recording keys (`openRecordingKeys`); none: nothing is decrypted. */
  recordingKeys: (RecordingKeys & { reload?(): void }) | undefined;
}

export interface UpstreamRuntime {
  /** The main account's client (`TWILIO_ACCOUNT_SID`). */
  upstream: TwilioClient;
  accountStore: AccountStore;
  /** Which account (and client) serves each business; downloads go through `accounts.media`. */
  accounts: AccountDirectory;
  /** Opens the businesses' own credentials; none without `RECGATE_CREDENTIALS_KEY`. */
  sealer: Sealer | undefined;
  /** Every download and HEAD goes through it: it learns which recordings are encrypted, and opens them. */
  decryption: Decryption;
  /** Closes the account clients, the main client and the account store, in that order. */
  close(): Promise<void>;
}

/**
 * The main Twilio client, the account store beside the call log (which must be open and migrated), the
 * account directory over both, and decryption over the directory's media. Throws an Error naming the
 * missing setting when the main account's credentials are not configured.
 */
export async function openUpstreamRuntime(
  config: Config,
  options: UpstreamRuntimeOptions,
): Promise<UpstreamRuntime> {
  if (!config.twilioAccountSid) throw new Error('TWILIO_ACCOUNT_SID is not set');
  if (!config.twilioAuthToken && !config.twilioApiKey) {
    throw new Error('TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET) is not set');
  }
  const { logger, breaker } = options;
  const clientDefaults = { baseUrl: config.twilioApiBase, ...options.clientDefaults, logger };
  const main = {
    accountSid: config.twilioAccountSid,
    authToken: config.twilioAuthToken,
    apiKey: config.twilioApiKey,
    apiSecret: config.twilioApiSecret,
  };
  const upstream = new TwilioClient({ ...clientDefaults, ...main, breaker });
  let accountStore: AccountStore;
  try {
    accountStore = await openAccountStore(parseDatabaseUrl(config.databaseUrl, config.dataDir));
  } catch (err) {
    await upstream.close();
    throw err;
  }
  const sealer = sealerOf(config);
  const accounts = new AccountDirectory({
    store: accountStore,
    main,
    mainClient: upstream,
    mainBreaker: breaker,
    sealer,
    clientDefaults,
    onOwnBreakerChange: options.onOwnBreakerChange,
  });
  const decryption = openDecryption(
    accounts.media,
    (account) => accounts.forAccount(account),
    options.recordingKeys,
    { storeEncrypted: config.storeEncrypted },
  );
  return {
    upstream,
    accountStore,
    accounts,
    sealer,
    decryption,
    close: async () => {
      await accounts.close();
      await upstream.close();
      await accountStore.close();
    },
  };
}

export interface CacheRuntimeOptions {
  /** Where downloads come from. */
  upstream: Pick<Upstream, 'fetchMedia'>;
  /** The media a business's downloads fetch instead (decryption, see `createRecordingCache`). @default `upstream` */
  mediaFor?: (businessId: string) => Pick<Upstream, 'fetchMedia'>;
  /** Opens recordings kept encrypted on disk (see `createRecordingCache`). @default none */
  decryptStored?: DecryptStored;
  logger: Logger;
  /** Also told each cache event (metrics); the evictor always is. */
  onEvent?: CacheEventHandler;
  /** Breaker, cold-download limit and admission of this process's downloads. @default none */
  gate?: UpstreamGateOptions;
  /** The evictor's observers (metrics). */
  evictor?: Pick<EvictorOptions, 'onEvicted' | 'onTotals'>;
  /**
   * Where recordings are kept, for the cache and the evictor. @default an {@link FsRecordingStore} on the data
   * dir's recordings directory
   */
  store?: RecordingStore;
}

export interface CacheRuntime {
  database: DatabaseTarget;
  cache: LocalRecordingCache;
  /** The cache index; none for an in-memory SQLite call log. */
  index: CacheIndex | undefined;
  /** Keeps the index in step and enforces the `--cache-*` limits; with the index. */
  evictor: Evictor | undefined;
  /** Closes the cache (waiting for its downloads), then the evictor, the index and the lock backend. */
  close(): Promise<void>;
}

/** The lock backend of `config`: `--lock-backend`, or PostgreSQL's when the call log is on it. */
export function lockBackendOf(
  config: Pick<Config, 'lockBackend' | 'databaseUrl' | 'dataDir'>,
): 'fs' | 'postgres' {
  return (
    config.lockBackend ??
    (parseDatabaseUrl(config.databaseUrl, config.dataDir).kind === 'postgres' ? 'postgres' : 'fs')
  );
}

export async function openCacheRuntime(config: Config, options: CacheRuntimeOptions): Promise<CacheRuntime> {
  const { logger } = options;
  const database = parseDatabaseUrl(config.databaseUrl, config.dataDir);
  // Several hosts over shared storage need a lock they all see; the call log's PostgreSQL is one. Its
  // fencing table goes in the call log's schema, which openCallLog has created by now.
  const pgLocker =
    lockBackendOf(config) === 'postgres' && database.kind === 'postgres'
      ? new (await import('./recordings/lock/postgres.js')).PostgresLocker({
          connectionString: database.connectionString,
          ...(database.schema === undefined ? {} : { schema: database.schema }),
        })
      : undefined;
  const dir = recordingsDir(config);
  const store = options.store ?? new FsRecordingStore({ dir });
  const locker: Locker = pgLocker ?? new FsLocker({ dir, pollIntervalMs: 15 });
  let bounded: { evictor: Evictor; index: CacheIndex } | undefined;
  try {
    // Before the first request: otherwise the first stampede after a start waits for the fencing table
    // and the lock's connections, in every process at once.
    await pgLocker?.warm();
    bounded = await startEvictor(config, database, { store, locker, logger, ...options.evictor });
  } catch (err) {
    await pgLocker?.close();
    throw err;
  }
  const evictor = bounded?.evictor;
  const cache = createRecordingCache({
    dir,
    upstream: options.upstream,
    ...(options.mediaFor === undefined ? {} : { mediaFor: options.mediaFor }),
    ...(options.decryptStored === undefined ? {} : { decryptStored: options.decryptStored }),
    store,
    locker,
    logger,
    lockTimeoutMs: config.lockTimeoutMs,
    onEvent: (event) => {
      options.onEvent?.(event);
      evictor?.observe(event);
    },
    ...(options.gate === undefined ? {} : { gate: options.gate }),
  });
  return {
    database,
    cache,
    index: bounded?.index,
    evictor,
    close: async () => {
      // The cache first: it waits for its downloads, and one that finishes now tells the evictor it saved its
      // file, which the evictor must still be open to record in the index (the store keeps working after
      // the cache closed it, for a pass that runs meanwhile).
      await cache.close();
      await evictor?.close();
      await bounded?.index.close();
      await pgLocker?.close();
    },
  };
}

/**
 * Bounded disk (see `recordings/eviction.ts`): the evictor keeps the cache index in the call log's database
 * in step, and enforces the `--cache-*` limits. None for an in-memory SQLite call log, which has no index.
 */
async function startEvictor(
  config: Config,
  database: DatabaseTarget,
  deps: Pick<EvictorOptions, 'store' | 'locker' | 'logger' | 'onEvicted' | 'onTotals'>,
): Promise<{ evictor: Evictor; index: CacheIndex } | undefined> {
  const index = await openCacheIndex(database);
  if (index === undefined) return undefined;
  const evictor = new Evictor({
    index,
    ...deps,
    limits: {
      maxBytes: config.cacheMaxBytes,
      minFree: config.cacheMinFree,
      maxAgeMs: config.cacheMaxAgeMs,
    },
  });
  try {
    await evictor.start();
  } catch (err) {
    await evictor.close().catch(() => undefined);
    await index.close();
    throw err;
  }
  return { evictor, index };
}
