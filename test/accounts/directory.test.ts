/**
 * The account directory without a network: which client serves which business, and how many it keeps; and
 * the recording cache reading a recording from the account its ref names (the download, and the ranged
 * slices a far seek fetches ahead of it, all carry `account` to the upstream).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sealCredentials } from '../../src/accounts/credentials.js';
import { type AccountClient, AccountDirectory } from '../../src/accounts/directory.js';
import { MemoryAccountStore } from '../../src/accounts/memory.js';
import { isRecgateError } from '../../src/errors.js';
import { Sealer } from '../../src/secrets/sealed.js';
import { UpstreamBreaker } from '../../src/upstream/breaker.js';
import { TwilioClient, type TwilioClientOptions } from '../../src/upstream/twilio-client.js';
import {
  audioBytes,
  FakeUpstream,
  makeCache,
  newRef,
  readAll,
  settled,
  tempDir,
} from '../recordings/helpers.js';

const MAIN = `AC${'a'.repeat(32)}`;
const sid = (n: number) => `AC${n.toString(16).padStart(32, '0')}`;

interface FakeClient {
  options: TwilioClientOptions;
  closed: boolean;
}

function setup(
  options: {
    maxClients?: number;
    now?: () => number;
    onOwnBreakerChange?: (open: boolean, windowMs: number) => void;
  } = {},
) {
  const store = new MemoryAccountStore();
  const sealer = new Sealer({ key: Buffer.alloc(32, 7) });
  const made: FakeClient[] = [];
  const fake = (o: TwilioClientOptions): AccountClient => {
    const record: FakeClient = { options: o, closed: false };
    made.push(record);
    return {
      options: o,
      close: async () => {
        record.closed = true;
      },
      getAccount: async () => ({ sid: o.accountSid, authToken: `token-of-${o.accountSid}` }),
    } as unknown as AccountClient;
  };
  const mainBreaker = new UpstreamBreaker();
  const mainClient = {
    main: true,
    getAccount: async () => ({ sid: MAIN, authToken: null }),
  } as unknown as AccountClient;
  const directory = new AccountDirectory({
    store,
    main: { accountSid: MAIN, authToken: 'main-token' },
    mainClient,
    mainBreaker,
    sealer,
    createClient: fake,
    ...options,
  });
  return { store, sealer, made, directory, mainClient, mainBreaker };
}

describe('AccountDirectory', () => {
  it('gives the main client to unmapped businesses, a subaccount client with the main credentials, own ones with theirs', async () => {
    const { store, sealer, made, directory, mainClient, mainBreaker } = setup();
    assert.equal((await directory.upstreamFor('nobody')).upstream, mainClient);
    assert.deepEqual(await directory.account('nobody'), { kind: 'main', accountSid: MAIN });
    await store.put({ businessId: 'a', kind: 'subaccount', accountSid: sid(1), sealedCredentials: null });
    await store.put({
      businessId: 'c',
      kind: 'own',
      accountSid: sid(2),
      sealedCredentials: sealCredentials(sealer, 'c', { authToken: 'own-token' }),
    });
    const a = await directory.upstreamFor('a');
    assert.equal(a.account, sid(1));
    assert.equal(made[0]!.options.accountSid, sid(1));
    assert.equal(made[0]!.options.apiKey, MAIN);
    assert.equal(made[0]!.options.apiSecret, 'main-token');
    assert.equal(made[0]!.options.breaker, mainBreaker);
    const c = await directory.upstreamFor('c');
    assert.equal(made[1]!.options.authToken, 'own-token');
    assert.notEqual(made[1]!.options.breaker, mainBreaker);
    // One client per account: asked again, and asked by account, the same ones.
    assert.equal((await directory.upstreamFor('a')).upstream, a.upstream);
    assert.equal(await directory.forAccount(sid(1)), a.upstream);
    assert.equal(await directory.forAccount(sid(2)), c.upstream);
    assert.equal(await directory.forAccount(MAIN), mainClient);
    assert.equal(await directory.forAccount(undefined), mainClient);
    assert.equal(made.length, 2);
    await assert.rejects(
      directory.forAccount(sid(9)),
      (err) => isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_AUTH',
    );
    assert.equal(await directory.webhookToken(MAIN), 'main-token');
    assert.equal(await directory.webhookToken(sid(2)), 'own-token');
    assert.equal(await directory.webhookToken(sid(1)), `token-of-${sid(1)}`);
    assert.equal(await directory.webhookToken(sid(9)), undefined);
    await directory.close();
    assert.ok(made.every((m) => m.closed));
  });

  it('keeps at most maxClients, closing the least recently used', async () => {
    const { store, made, directory } = setup({ maxClients: 2 });
    for (const n of [1, 2, 3]) {
      await store.put({
        businessId: `b${n}`,
        kind: 'subaccount',
        accountSid: sid(n),
        sealedCredentials: null,
      });
    }
    await directory.upstreamFor('b1');
    await directory.upstreamFor('b2');
    await directory.upstreamFor('b1');
    await directory.upstreamFor('b3');
    assert.deepEqual(
      made.map((m) => [m.options.accountSid, m.closed]),
      [
        [sid(1), false],
        [sid(2), true],
        [sid(3), false],
      ],
    );
    await directory.close();
  });

  it("gives each account's breaker: the main one to the main account and subaccounts, one per own account", async () => {
    const { store, sealer, made, directory, mainBreaker } = setup();
    assert.equal(await directory.breakerFor(undefined), mainBreaker);
    assert.equal(await directory.breakerFor(MAIN), mainBreaker);
    await store.put({ businessId: 'a', kind: 'subaccount', accountSid: sid(1), sealedCredentials: null });
    assert.equal(await directory.breakerFor(sid(1)), mainBreaker);
    // Two businesses on one own account, with credentials sealed apart: two clients, one breaker (one
    // Twilio account, one rate limit).
    for (const business of ['c', 'c2']) {
      await store.put({
        businessId: business,
        kind: 'own',
        accountSid: sid(2),
        sealedCredentials: sealCredentials(sealer, business, { authToken: 'own-token' }),
      });
    }
    assert.equal(await directory.breakerFor(sid(2)), undefined, 'no client yet: nothing throttles it');
    await directory.upstreamFor('c');
    await directory.upstreamFor('c2');
    assert.equal(made.length, 2);
    const own = made[0]!.options.breaker!;
    assert.notEqual(own, mainBreaker);
    assert.equal(made[1]!.options.breaker, own);
    assert.equal(await directory.breakerFor(sid(2)), own);
    assert.equal(await directory.breakerFor(sid(9)), undefined, 'an account no business is mapped to');
    await directory.close();
  });

  it("keeps an own account's open breaker past its client's eviction, and forgets it once closed", async () => {
    let now = 1_000_000;
    const changes: Array<[boolean, number]> = [];
    const { store, sealer, made, directory } = setup({
      maxClients: 1,
      now: () => now,
      onOwnBreakerChange: (open, ms) => changes.push([open, ms]),
    });
    for (const [business, n] of [
      ['c', 2],
      ['d', 3],
    ] as const) {
      await store.put({
        businessId: business,
        kind: 'own',
        accountSid: sid(n),
        sealedCredentials: sealCredentials(sealer, business, { authToken: `token-${business}` }),
      });
    }
    await directory.upstreamFor('c');
    const breaker = made[0]!.options.breaker!;
    breaker.trip(30_000);
    assert.deepEqual(changes, [[true, 30_000]], 'the hook hears an own breaker open');
    // d's client pushes c's out; c's breaker stays, and c's next client waits out the same Retry-After.
    await directory.upstreamFor('d');
    assert.equal(made[0]!.closed, true);
    assert.equal(await directory.breakerFor(sid(2)), breaker);
    await directory.upstreamFor('c');
    assert.equal(made.length, 3);
    assert.equal(made[2]!.options.breaker, breaker);
    assert.equal(breaker.remainingMs(), 30_000);
    // Evicted again once the window is over: closed and without a client, it is forgotten.
    now += 30_000;
    await directory.upstreamFor('d');
    assert.equal(await directory.breakerFor(sid(2)), undefined);
    await directory.upstreamFor('c');
    assert.notEqual(made[4]!.options.breaker, breaker, 'a fresh breaker, not the old one kept forever');

    // Evicted while open, then closed by its own timer: forgotten when it reports the close.
    const second = made[4]!.options.breaker!;
    second.trip(20);
    await directory.upstreamFor('d');
    assert.equal(await directory.breakerFor(sid(2)), second);
    now += 20;
    const deadline = Date.now() + 10_000;
    while ((await directory.breakerFor(sid(2))) !== undefined) {
      assert.ok(Date.now() < deadline, 'the closed breaker was never forgotten');
      await new Promise((r) => setTimeout(r, 5));
    }
    // The first breaker's close comes 30 s of real time later, if this process still runs then.
    assert.deepEqual(changes.slice(0, 3), [
      [true, 30_000],
      [true, 20],
      [false, 0],
    ]);
    await directory.close();
  });

  it('trusts a mapping for mappingTtlMs, and forget() drops it at once', async () => {
    let now = 0;
    const { store, directory } = setup({ now: () => now });
    assert.equal((await directory.account('b')).kind, 'main');
    await store.put({ businessId: 'b', kind: 'subaccount', accountSid: sid(4), sealedCredentials: null });
    assert.equal((await directory.account('b')).kind, 'main');
    now += 5000;
    assert.equal((await directory.account('b')).accountSid, sid(4));
    await store.delete('b');
    directory.forget('b');
    assert.equal((await directory.account('b')).kind, 'main');
  });

  it("accepts a newly mapped account's webhooks at once here, and within mappingTtlMs from another process", async () => {
    let now = 0;
    const { store, directory } = setup({ now: () => now });
    assert.equal(await directory.webhookToken(sid(7)), undefined);
    // Mapped by this process: forget() names the new account, so the refusal is not remembered.
    await store.put({ businessId: 'n', kind: 'subaccount', accountSid: sid(7), sealedCredentials: null });
    directory.forget('n', sid(7));
    assert.equal(await directory.webhookToken(sid(7)), `token-of-${sid(7)}`);
    // Mapped by another process (no forget here): a refusal lasts a mapping's time, not a token's.
    assert.equal(await directory.webhookToken(sid(8)), undefined);
    await store.put({ businessId: 'm', kind: 'subaccount', accountSid: sid(8), sealedCredentials: null });
    now += 4999;
    assert.equal(await directory.webhookToken(sid(8)), undefined);
    now += 1;
    assert.equal(await directory.webhookToken(sid(8)), `token-of-${sid(8)}`);
    // A token found is trusted for tokenTtlMs, past a mapping's time.
    await store.delete('m');
    now += 5000;
    assert.equal(await directory.webhookToken(sid(8)), `token-of-${sid(8)}`);
    // Unmapped by this process: forget() names the old account and drops its token at once.
    await store.delete('n');
    directory.forget('n', sid(7));
    assert.equal(await directory.webhookToken(sid(7)), undefined);
  });

  it('shares one store read among concurrent misses, and does not remember a failed one', async () => {
    const { store, directory } = setup();
    await store.put({ businessId: 'q', kind: 'subaccount', accountSid: sid(3), sealedCredentials: null });
    let reads = 0;
    const get = store.get.bind(store);
    let fail = true;
    store.get = async (id) => {
      reads += 1;
      await new Promise((r) => setImmediate(r));
      if (fail) throw new Error('database down');
      return get(id);
    };
    const failed = await Promise.allSettled([directory.account('q'), directory.account('q')]);
    assert.deepEqual(
      failed.map((f) => f.status),
      ['rejected', 'rejected'],
    );
    assert.equal(reads, 1);
    fail = false;
    const answers = await Promise.all(Array.from({ length: 20 }, () => directory.account('q')));
    assert.ok(answers.every((a) => a.accountSid === sid(3)));
    assert.equal(reads, 2);
  });

  it('answers a remembered mapping at once, and through a promise again once it is no longer trusted', async () => {
    let now = 1_000_000;
    const { store, directory } = setup({ now: () => now });
    await store.put({ businessId: 'a', kind: 'subaccount', accountSid: sid(1), sealedCredentials: null });
    const first = directory.upstreamFor('a');
    assert.ok(first instanceof Promise, 'never read: from the store');
    const { account, upstream } = await first;
    assert.equal(account, sid(1));
    const again = directory.upstreamFor('a');
    assert.ok(!(again instanceof Promise), 'remembered: no promise');
    assert.deepEqual(again, { account, upstream });
    now += 5000; // the default mapping TTL
    await store.put({ businessId: 'a', kind: 'subaccount', accountSid: sid(2), sealedCredentials: null });
    const stale = directory.upstreamFor('a');
    assert.ok(stale instanceof Promise, 'no longer trusted: read again');
    assert.equal((await stale).account, sid(2));
  });

  it('fails plainly when own credentials do not open', async () => {
    const { store, directory } = setup();
    const other = new Sealer({ key: Buffer.alloc(32, 8) });
    await store.put({
      businessId: 'x',
      kind: 'own',
      accountSid: sid(5),
      sealedCredentials: sealCredentials(other, 'x', { authToken: 't' }),
    });
    await assert.rejects(
      async () => directory.upstreamFor('x'),
      (err) => isRecgateError(err) && err.code === 'RECGATE_CREDENTIALS_UNREADABLE',
    );
    // Sealed for business x, copied into y's row: does not open there either.
    const sealed = (await store.get('x'))!.sealedCredentials!;
    await store.put({ businessId: 'y', kind: 'own', accountSid: sid(6), sealedCredentials: sealed });
    await assert.rejects(async () => directory.upstreamFor('y'), /could not be decrypted/);
    assert.throws(() => setup({ maxClients: 0 }), /options.maxClients must be a positive integer/);
  });

  it('a single-account client refuses a media request for another account, before anything is sent', async () => {
    const client = new TwilioClient({ baseUrl: 'http://127.0.0.1:9', accountSid: MAIN, authToken: 't' });
    try {
      await assert.rejects(
        client.fetchMedia(`RE${'1'.repeat(32)}` as never, { account: sid(1) }),
        (err) => isRecgateError(err) && err.code === 'RECGATE_UPSTREAM_AUTH',
      );
    } finally {
      await client.close();
    }
  });
});

const ACCOUNT = `AC${'5'.repeat(32)}`;

describe('recording cache and accounts', () => {
  it('asks the upstream for the ref’s account on the download and on every seek-ahead slice', async (t) => {
    const dir = tempDir(t);
    const data = audioBytes(1_000_000);
    const upstream = new FakeUpstream({ data, chunkSize: 32 * 1024, chunkDelayMs: 16 });
    const { cache } = makeCache(t, dir, upstream, {
      lockTimeoutMs: 10_000,
      seekAhead: {
        blockBytes: 64 * 1024,
        minDistanceBytes: 64 * 1024,
        assumedBytesPerSecond: 100_000,
        maxSliceBytes: 256 * 1024,
      },
    });
    const ref = { ...newRef(), account: ACCOUNT };
    const rec = await cache.open(ref, { readStart: 900_000 });
    const body = await readAll(rec.createReadStream(900_000, data.length - 1));
    assert.ok(body.equals(data.subarray(900_000)));
    await settled(dir, ref, 30_000);
    assert.ok(
      upstream.calls.some((c) => c.start !== undefined),
      'a slice was fetched',
    );
    assert.deepEqual(
      upstream.calls.map((c) => c.account),
      upstream.calls.map(() => ACCOUNT),
    );
  });
});
