/**
 * The cross-host cap end to end: two gateways (two hosts) on one PostgreSQL database and one shared
 * recordings directory, together allowed 2 downloads by `--upstream-concurrency-global`: the cap holds, and
 * the queue is fair across businesses over both hosts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { readdir } from 'node:fs/promises';
import { it, type TestContext } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../../src/config/config.js';
import { startGateway } from '../../src/server.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';
import { type Cold, coldCall, download, until } from './admission-helpers.js';

const found = await findPostgres();
const url = 'url' in found ? found.url : undefined;

if (url === undefined) {
  it('cross-host admission', (t) => postgresUnavailable(t, 'reason' in found ? found.reason : ''));
} else {
  /** A gateway with `config` on a fresh schema, and a second one on the same database and directory. */
  const twoGateways = async (
    t: TestContext,
    config: Record<string, unknown>,
  ): Promise<[Stack, Stack, string]> => {
    const schema = `recgate_admission_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(async () => {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    });
    const shared = { databaseUrl: `${url}?schema=${schema}`, coldDownloadRate: 0, ...config };
    const stack = await startStack({ config: shared });
    t.after(() => stack.close());
    const second = await startGateway(
      loadConfig(
        {
          ...shared,
          port: 0,
          dataDir: stack.dataDir,
          jwtSecret: JWT_SECRET,
          twilioApiBase: stack.emulator.url,
          twilioAccountSid: stack.emulator.accountSid,
          twilioAuthToken: stack.emulator.authToken,
          logLevel: 'silent',
        },
        {},
      ),
    );
    t.after(() => second.close());
    return [stack, { ...stack, url: second.url }, schema];
  };

  it('two gateways on one database never run more downloads together than the global cap', async (t) => {
    const [stack, second] = await twoGateways(t, { upstreamConcurrency: 3, upstreamConcurrencyGlobal: 2 });
    stack.emulator.setThrottle({ ttfbMs: 150 });
    const token = await stack.token('biz-a');
    const calls = [];
    for (let i = 0; i < 10; i++) calls.push(await coldCall(stack, i % 2 ? 'biz-a' : 'biz-b'));
    const tokens = { 'biz-a': token, 'biz-b': await stack.token('biz-b') };
    const answers = await Promise.all(
      calls.map((call, i) =>
        download(i % 2 ? stack : second, i % 2 ? tokens['biz-a'] : tokens['biz-b'], call.callSid),
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      calls.map(() => 200),
    );
    const stats = stack.emulator.stats();
    t.diagnostic(
      `${stats.total_media_requests} media GETs, at most ${stats.max_concurrent_media_requests} at once`,
    );
    assert.equal(stats.total_media_requests, 10);
    assert.equal(stats.max_concurrent_media_requests, 2);
  });

  /**
   * One business's 200 cold calls over two gateways, then one click of another: the click must wait one
   * slot turnover at most. `locked` counts the recordings whose lock is held now (each download, running or
   * waiting for a slot, holds its recording's lock).
   */
  const backlogThenClick = async (
    t: TestContext,
    lockBackend: 'fs' | 'postgres',
    locked: (one: Stack, schema: string) => Promise<number>,
  ) => {
    // The default 16 downloads per gateway, 2 across both: most of A's requests hold no slot anywhere, and
    // wait for one holding their recording's lock.
    const [one, two, schema] = await twoGateways(t, { upstreamConcurrencyGlobal: 2, lockBackend });
    const emulator = one.emulator;
    // Each download holds its slot for 3 s before its first byte, so turnovers are few and far apart (a slot
    // frees every 1.5 s on average) next to the time B's request takes to reach the queue (a few ms; this
    // file runs alone, see test/run.ts).
    emulator.setThrottle({ ttfbMs: 3000 });
    const tokenA = await one.token('biz-a');
    const backlog: Cold[] = [];
    for (let i = 0; i < 200; i++) backlog.push(await coldCall(one, 'biz-a', 1000));
    const click = await coldCall(one, 'biz-b', 1000);
    const leave = new AbortController();
    setMaxListeners(backlog.length + 10, leave.signal);
    const pending = backlog.map((call, i) =>
      download(i % 2 ? one : two, tokenA, call.callSid, { signal: leave.signal }).catch(
        (err: unknown) => err,
      ),
    );
    // (The two gateways share one process and so one /metrics registry: its queue gauge is not a sum.)
    await until(
      'a backlog of 190 cold calls of business A',
      async () => (await locked(one, schema)) >= 190,
      60_000,
    );

    const before = emulator.stats().total_media_requests;
    const clicked = download(two, await two.token('biz-b'), click.callSid);
    await until("B's media request", () => emulator.stats().media_requests[click.recordingSid] === 1, 60_000);
    const ofA = emulator.stats().total_media_requests - before - 1;
    const waiting = (await locked(one, schema)) - 2;
    t.diagnostic(
      `B's click: ${ofA} media request(s) of A from the click to B's own, ~${waiting} of A's waiting`,
    );
    // B takes the first slot that frees once its gateway has published it; only a slot that freed while B's
    // request was on its way there may have gone to A first.
    assert.ok(ofA <= 2, `${ofA} of A's downloads started between B's click and B's own`);
    assert.ok(waiting >= 150, "A's backlog is still waiting");
    assert.equal(emulator.stats().max_concurrent_media_requests, 2, 'never more than the global cap');

    leave.abort();
    await Promise.all(pending);
    const res = await clicked;
    assert.equal(res.status, 200);
    assert.equal(res.body.length, click.size);
  };

  it("one business's 200 cold calls over two gateways delay another's single click by one slot turnover at most (directory lock)", async (t) => {
    // Both gateways share the recordings directory, so its lock files are all the held locks.
    await backlogThenClick(
      t,
      'fs',
      async (one) =>
        (await readdir(`${one.dataDir}/recordings`, { recursive: true })).filter((f) => f.endsWith('.lock'))
          .length,
    );
  });

  it("one business's 200 cold calls over two gateways delay another's single click by one slot turnover at most (PostgreSQL lock)", async (t) => {
    // Each gateway holds all its recording locks on one session, so A's backlog leaves B's click nothing to
    // wait for before the admission queue. Held locks are the granted advisory locks on the keys of this
    // schema's fencing table (the admission slots use other keys).
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    t.after(() => admin.end());
    await backlogThenClick(t, 'postgres', async (_one, schema) => {
      const { rows } = await admin.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN ${schema}.recgate_lock_fence f
            ON l.classid = ((f.key >> 32) & 4294967295)::oid AND l.objid = (f.key & 4294967295)::oid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1`,
      );
      return rows[0]?.n ?? 0;
    });
  });
}
