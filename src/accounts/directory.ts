/**
 * Which Twilio account serves a business, and the client that reaches it.
 *
 * A business maps to the main account (no row in the {@link AccountStore}), a subaccount (the main
 * credentials, the subaccount's SID in the REST path) or its own account (its own credentials, sealed in
 * the store). The directory reads the mapping (trusted for `mappingTtlMs`, so a change made by another
 * process shows within that time; this process's own changes at once), and keeps one client per account:
 * the main one it is given, and the others created on first use, at most `maxClients` of them, the least
 * recently used closed first. The main account and its subaccounts share the main breaker (one set of
 * credentials, one Twilio rate limit); an account with its own credentials gets a breaker of its own, one
 * per account SID, which outlives the account's client while it is open: a client closed as least recently
 * used and made again during a `Retry-After` finds its account still throttled instead of asking Twilio.
 * The download's admission reads the breaker of the account it reads from ({@link AccountDirectory.breakerFor}).
 *
 * The resolver asks it for the requesting business's upstream (so a lookup, the parent-call fallback
 * included, only ever sees that business's account) and records the account in the RecordingRef; the
 * download then reads the recording from that account through {@link AccountDirectory.media}.
 */
import { createError } from '../errors.js';
import type { Sealer } from '../secrets/sealed.js';
import { type BreakerOptions, UpstreamBreaker } from '../upstream/breaker.js';
import { TwilioClient, type TwilioClientOptions } from '../upstream/twilio-client.js';
import type { MediaRequest, Upstream } from '../upstream/upstream.js';
import { openCredentials } from './credentials.js';
import type { AccountKind, AccountRow, AccountStore } from './store.js';

/** An upstream that can also read its account's own resource (for webhook tokens). */
export type AccountClient = Upstream & Pick<TwilioClient, 'getAccount'>;

/** The main account's credentials: `TWILIO_ACCOUNT_SID` with `TWILIO_AUTH_TOKEN` or an API key. */
export interface MainAccount {
  accountSid: string;
  authToken?: string | undefined;
  apiKey?: string | undefined;
  apiSecret?: string | undefined;
}

/** Where a business's recordings are read. */
export interface BusinessAccount {
  kind: 'main' | AccountKind;
  /** The account SID in the REST path. */
  accountSid: string;
}

export interface AccountDirectoryOptions {
  store: AccountStore;
  main: MainAccount;
  /** The main account's client; the directory uses it, the caller closes it. */
  mainClient: AccountClient;
  /** The main client's breaker, shared by the subaccounts' clients. */
  mainBreaker: UpstreamBreaker;
  /** Opens own credentials; without it a business with own credentials fails with RECGATE_CREDENTIALS_UNREADABLE. @default none */
  sealer?: Sealer | undefined;
  /** Options every other account's client shares (base URL, timeouts, hooks). @default {} */
  clientDefaults?: Omit<TwilioClientOptions, 'accountSid' | 'authToken' | 'apiKey' | 'apiSecret' | 'breaker'>;
  /** Makes a client; tests pass their own. @default `new TwilioClient(options)` */
  createClient?: (options: TwilioClientOptions) => AccountClient;
  /** Most clients kept besides the main one. @default 32 */
  maxClients?: number;
  /**
   * Told when an own account's breaker opens (with the window in ms) or closes (metrics: the accounts are
   * not named, so one hook serves them all). @default none
   */
  onOwnBreakerChange?: BreakerOptions['onChange'];
  /** How long a mapping read from the store is trusted, ms. @default 5000 */
  mappingTtlMs?: number;
  /** How long a subaccount's auth token fetched for webhooks is trusted, ms. @default 300000 */
  tokenTtlMs?: number;
  /** Clock, ms. @default Date.now */
  now?: () => number;
}

/** Which account serves a business, and the client that speaks for it. */
export interface UpstreamTarget {
  account: string;
  upstream: AccountClient;
}

/** Most mappings and tokens remembered; the oldest go first. */
const MAX_REMEMBERED = 10_000;

/**
 * Most own-account breakers kept. Only those of accounts with a client or still open are kept at all; past
 * this many, the oldest of an account without a client goes first, open or not.
 */
const MAX_OWN_BREAKERS = 10_000;

/**
 * Answers remembered for a while, at most {@link MAX_REMEMBERED} of them. Concurrent misses on one key
 * share one load; a load that fails is not remembered.
 */
class Remembered<T> {
  readonly #values = new Map<string, { value: T; at: number; ttlMs: number }>();
  readonly #loading = new Map<string, Promise<T>>();
  readonly #now: () => number;

  constructor(now: () => number) {
    this.#now = now;
  }

  /** The value remembered for `key` while it is still trusted, at once; `undefined` when there is none. */
  fresh(key: string): { value: T } | undefined {
    const hit = this.#values.get(key);
    return hit !== undefined && this.#now() - hit.at < hit.ttlMs ? hit : undefined;
  }

  /** The value remembered for `key`, else `load()`'s, remembered for `ttlMs(value)`. */
  get(key: string, load: () => Promise<T>, ttlMs: (value: T) => number): Promise<T> {
    const hit = this.fresh(key);
    if (hit !== undefined) return Promise.resolve(hit.value);
    let pending = this.#loading.get(key);
    if (pending === undefined) {
      pending = load().then(
        (value) => {
          // forget() during the load drops this promise: its answer may predate the change, so keep it out.
          if (this.#loading.get(key) === pending) {
            this.#loading.delete(key);
            this.#values.delete(key);
            this.#values.set(key, { value, at: this.#now(), ttlMs: ttlMs(value) });
            if (this.#values.size > MAX_REMEMBERED) this.#values.delete(this.#values.keys().next().value!);
          }
          return value;
        },
        (err: unknown) => {
          if (this.#loading.get(key) === pending) this.#loading.delete(key);
          throw err;
        },
      );
      this.#loading.set(key, pending);
    }
    return pending;
  }

  /** The value remembered for `key`, however old, if any. */
  peek(key: string): T | undefined {
    return this.#values.get(key)?.value;
  }

  forget(key: string): void {
    this.#values.delete(key);
    this.#loading.delete(key);
  }
}

export class AccountDirectory {
  readonly #o: AccountDirectoryOptions;
  readonly #maxClients: number;
  readonly #ttlMs: number;
  readonly #tokenTtlMs: number;
  readonly #now: () => number;
  readonly #rows: Remembered<AccountRow | undefined>;
  readonly #byAccount: Remembered<AccountRow | undefined>;
  readonly #tokens: Remembered<string | undefined>;
  readonly #clients = new Map<string, AccountClient>();
  /** Own accounts' breakers by account SID: those with a client, and those still open (see {@link #dropIdleBreaker}). */
  readonly #ownBreakers = new Map<string, UpstreamBreaker>();
  #closed = false;

  /** Routes media requests by {@link MediaRequest.account}; what the recording cache downloads through. */
  readonly media: Pick<Upstream, 'fetchMedia'>;

  /** Throws TypeError naming a bad option. */
  constructor(options: AccountDirectoryOptions) {
    this.#o = options;
    this.#maxClients = options.maxClients ?? 32;
    this.#ttlMs = options.mappingTtlMs ?? 5000;
    this.#tokenTtlMs = options.tokenTtlMs ?? 300_000;
    this.#now = options.now ?? Date.now;
    this.#rows = new Remembered(this.#now);
    this.#byAccount = new Remembered(this.#now);
    this.#tokens = new Remembered(this.#now);
    if (!Number.isSafeInteger(this.#maxClients) || this.#maxClients < 1) {
      throw new TypeError('options.maxClients must be a positive integer');
    }
    for (const [name, value] of [
      ['mappingTtlMs', this.#ttlMs],
      ['tokenTtlMs', this.#tokenTtlMs],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new TypeError(`options.${name} must be a non-negative integer`);
      }
    }
    this.media = {
      fetchMedia: async (sid, request: MediaRequest = {}) =>
        (await this.forAccount(request.account)).fetchMedia(sid, request),
    };
  }

  /** The main account's SID (`TWILIO_ACCOUNT_SID`). */
  get mainAccountSid(): string {
    return this.#o.main.accountSid;
  }

  /** The account serving `businessId`. Throws RECGATE_DATABASE_ERROR if the store fails. */
  async account(businessId: string): Promise<BusinessAccount> {
    const row = await this.#row(businessId);
    return row === undefined
      ? { kind: 'main', accountSid: this.#o.main.accountSid }
      : { kind: row.kind, accountSid: row.accountSid };
  }

  /**
   * The business's account and its client: at once when its mapping is remembered and still trusted (every
   * warm play asks), else a promise. Throws or rejects with RECGATE_CREDENTIALS_UNREADABLE when its own
   * credentials do not open, RECGATE_DATABASE_ERROR when the store fails.
   */
  upstreamFor(businessId: string): UpstreamTarget | Promise<UpstreamTarget> {
    const known = this.#rows.fresh(businessId);
    if (known !== undefined) return this.#target(known.value);
    return this.#row(businessId).then((row) => this.#target(row));
  }

  #target(row: AccountRow | undefined): UpstreamTarget {
    return { account: row?.accountSid ?? this.#o.main.accountSid, upstream: this.#clientFor(row) };
  }

  /**
   * The client for account `account` (`undefined`: the main one): the main client for the main account,
   * else the credentials of a business mapped to it. Throws RECGATE_UPSTREAM_AUTH when no business is
   * mapped to that account any more.
   */
  async forAccount(account: string | undefined): Promise<AccountClient> {
    if (account === undefined || account === this.#o.main.accountSid) return this.#o.mainClient;
    const row = await this.#accountRow(account);
    if (row === undefined) {
      throw createError('RECGATE_UPSTREAM_AUTH', {
        cause: new Error(`no business is mapped to account ${account} any more`),
      });
    }
    return this.#clientFor(row);
  }

  /**
   * The breaker that guards account `account` (`undefined`: the main one): the main breaker for the main
   * account and its subaccounts, the account's own for an account with its own credentials. `undefined`
   * when none does: an own account with neither a client nor an open breaker (so nothing throttles it), or
   * an account no business is mapped to any more (whose download fails on its own). Reads the mapping as
   * {@link forAccount} does, so it names the breaker of the client the download will use. Throws
   * RECGATE_DATABASE_ERROR if the store fails.
   */
  async breakerFor(account: string | undefined): Promise<UpstreamBreaker | undefined> {
    if (account === undefined || account === this.#o.main.accountSid) return this.#o.mainBreaker;
    const row = await this.#accountRow(account);
    if (row === undefined) return undefined;
    return row.kind === 'subaccount' ? this.#o.mainBreaker : this.#ownBreakers.get(row.accountSid);
  }

  /**
   * The auth token that signs account `accountSid`'s webhooks, or `undefined` for an account no business is
   * mapped to (the webhook is then refused as a bad signature). A subaccount's token is read from Twilio
   * with the main credentials (Twilio shows it to the parent) and remembered for `tokenTtlMs`. "No business
   * on this account" is remembered only as long as a mapping (`mappingTtlMs`), so an account mapped by
   * another process is accepted within that time.
   */
  async webhookToken(accountSid: string): Promise<string | undefined> {
    if (accountSid === this.#o.main.accountSid) return this.#o.main.authToken;
    return this.#tokens.get(
      accountSid,
      async () => {
        const row = await this.#accountRow(accountSid);
        if (row === undefined) return undefined;
        if (row.kind === 'own') {
          const own = openCredentials(this.#o.sealer, row.businessId, row.sealedCredentials!);
          if (own.authToken !== undefined) return own.authToken;
        }
        return (await this.#clientFor(row).getAccount()).authToken ?? undefined;
      },
      (token) => (token === undefined ? this.#ttlMs : this.#tokenTtlMs),
    );
  }

  /**
   * Forgets what is remembered about `businessId` and the accounts it was and is now mapped to
   * (`accountSids`), after this process changed its mapping: the change holds here at once.
   */
  forget(businessId: string, ...accountSids: string[]): void {
    const before = this.#rows.peek(businessId);
    this.#rows.forget(businessId);
    for (const account of before === undefined ? accountSids : [before.accountSid, ...accountSids]) {
      this.#byAccount.forget(account);
      this.#tokens.forget(account);
    }
  }

  /** Closes every client the directory created (not the main one). */
  async close(): Promise<void> {
    this.#closed = true;
    const clients = [...this.#clients.values()];
    this.#clients.clear();
    this.#ownBreakers.clear();
    await Promise.all(clients.map((c) => c.close()));
  }

  /** The row that stands for account `account`: a subaccount row needs no secret; else the first business's. */
  #accountRow(account: string): Promise<AccountRow | undefined> {
    return this.#byAccount.get(
      account,
      async () => {
        const rows = await this.#o.store.byAccountSid(account);
        return rows.find((r) => r.kind === 'subaccount') ?? rows[0];
      },
      () => this.#ttlMs,
    );
  }

  #row(businessId: string): Promise<AccountRow | undefined> {
    return this.#rows.get(
      businessId,
      () => this.#o.store.get(businessId),
      () => this.#ttlMs,
    );
  }

  #clientFor(row: AccountRow | undefined): AccountClient {
    if (row === undefined) return this.#o.mainClient;
    if (this.#closed) throw createError('RECGATE_SHUTTING_DOWN');
    // Own credentials are keyed by what is sealed (unique per seal: a fresh IV each time), so changed
    // credentials get a new client.
    const key =
      row.kind === 'subaccount' ? `sub:${row.accountSid}` : `own:${row.accountSid}:${row.sealedCredentials!}`;
    let client = this.#clients.get(key);
    if (client !== undefined) {
      this.#clients.delete(key);
      this.#clients.set(key, client);
      return client;
    }
    client = this.#create(row);
    this.#clients.set(key, client);
    while (this.#clients.size > this.#maxClients) {
      const [oldest, evicted] = this.#clients.entries().next().value!;
      this.#clients.delete(oldest);
      // Requests in flight finish first (TwilioClient.close waits for them).
      void evicted.close().catch(() => undefined);
      if (oldest.startsWith('own:')) this.#dropIdleBreaker(oldest.split(':')[1]!);
    }
    return client;
  }

  /** Account `accountSid`'s own breaker, made on first use. */
  #ownBreaker(accountSid: string): UpstreamBreaker {
    let breaker = this.#ownBreakers.get(accountSid);
    if (breaker !== undefined) return breaker;
    const onChange = this.#o.onOwnBreakerChange;
    breaker = new UpstreamBreaker({
      now: this.#now,
      onChange: (open, windowMs) => {
        onChange?.(open, windowMs);
        if (!open) this.#dropIdleBreaker(accountSid);
      },
    });
    this.#ownBreakers.set(accountSid, breaker);
    if (this.#ownBreakers.size > MAX_OWN_BREAKERS) {
      for (const sid of this.#ownBreakers.keys()) {
        if (!this.#hasClient(sid)) {
          this.#ownBreakers.delete(sid);
          break;
        }
      }
    }
    return breaker;
  }

  /**
   * Forgets account `accountSid`'s breaker once nothing needs it: it is closed and the account has no
   * client. An open one is kept, so a client made again during the `Retry-After` still waits it out.
   */
  #dropIdleBreaker(accountSid: string): void {
    const breaker = this.#ownBreakers.get(accountSid);
    if (breaker === undefined || breaker.remainingMs() > 0 || this.#hasClient(accountSid)) return;
    this.#ownBreakers.delete(accountSid);
  }

  /** Whether a client with account `accountSid`'s own credentials is kept. */
  #hasClient(accountSid: string): boolean {
    const prefix = `own:${accountSid}:`;
    for (const key of this.#clients.keys()) if (key.startsWith(prefix)) return true;
    return false;
  }

  #create(row: AccountRow): AccountClient {
    const make = this.#o.createClient ?? ((options: TwilioClientOptions) => new TwilioClient(options));
    const defaults = this.#o.clientDefaults ?? {};
    if (row.kind === 'subaccount') {
      const { main } = this.#o;
      // The parent's credentials, the subaccount's SID in the path.
      return make({
        ...defaults,
        accountSid: row.accountSid,
        apiKey: main.apiKey ?? main.accountSid,
        apiSecret: (main.apiKey === undefined ? main.authToken : main.apiSecret) ?? '',
        breaker: this.#o.mainBreaker,
      });
    }
    const own = openCredentials(this.#o.sealer, row.businessId, row.sealedCredentials!);
    return make({
      ...defaults,
      accountSid: row.accountSid,
      ...(own.apiKey === undefined
        ? { authToken: own.authToken }
        : { apiKey: own.apiKey, apiSecret: own.apiSecret }),
      breaker: this.#ownBreaker(row.accountSid),
    });
  }
}
