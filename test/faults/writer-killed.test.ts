/**
 * Fault: the worker that is downloading a recording is killed with SIGKILL (issue 9).
 *
 * `recgate serve --workers 2` (SQLite call log, fs locks) serves a fresh, throttled recording to clients
 * spread over both workers (separate connections, which node:cluster hands out round-robin). The worker
 * that logged `cache_miss` is killed when the emulator has sent a seeded number of the recording's bytes,
 * between 5 % and 95 % of its size; with five points or more, the first two and the last three are edges
 * instead: while the upstream has not answered (its time to first byte is slowed down), at its first
 * bytes, once the worker published the last byte, once it wrote the identity record over the generation's
 * frontier file (before it renames that file to be the record, then the recording), and once the
 * final file appeared (mostly before the commit's clean-up). The edges past the last byte watch the files
 * synchronously, so the kill lands within microseconds. Each point checks:
 *
 * - every body is complete and byte-identical, or cut (a transport error) after a correct prefix: never
 *   complete and wrong;
 * - clients of the surviving worker get complete bodies: it takes the download over and finishes it,
 *   resuming with Range from exactly what the killed worker had published;
 * - once it settles the call has `{sid}.mp3` with the right bytes and its `.{sid}.mp3.id` record, and
 *   nothing else (no generation, frontier, block map, pointer or temporary file);
 * - the primary restarted the killed worker, the new worker answers, and the gateway keeps serving.
 *
 * FAULT_REPEAT points (default 20) from FAULT_SEED; see test/faults/seed.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import { FsRecordingStore } from '../../src/recordings/store/fs.js';
import { sha256 as sha } from '../helpers/common.js';
import { settledFiles } from '../helpers/recordings.js';
import { type ServeProcess, startServeProcess } from '../helpers/serve-process.js';
import { ADMIN_TOKEN, JWT_SECRET } from '../helpers/stack.js';
import { between, faultRepeat, faultSeed, seededRandom } from './seed.js';

/** Media bytes per second of every upstream response: a 300–600 KB recording takes 0.3–0.6 s. */
const BANDWIDTH = 1_000_000;
/** Upstream time to first byte at the point that kills before the upstream answered. */
const SLOW_TTFB_MS = 500;
/**
 * Range requests start below this, so they never trigger a seek-ahead slice (which starts no closer than
 * 256 KiB to the frontier): every upstream byte then belongs to the one download the points are counted on.
 */
const NEAR_RANGE = 200_000;
/** How long any one wait of a point may take before the point fails (not a timing assertion). */
const DEADLINE_MS = 30_000;
/**
 * How long a client waits for response headers. A connection that node:cluster's primary handed to the
 * worker just as it was killed, before the worker took it, is never answered nor closed: the primary keeps
 * its copy of the socket and waits for an acknowledgement that cannot come (nodejs/node#7006, still so in
 * Node 20). Such a client is cut when this runs out. Every other client has its headers within about a
 * second, the takeover included.
 */
const HEADERS_MS = 8_000;

type KillAt =
  /** The upstream request went out, its headers (delayed by SLOW_TTFB_MS) have not come back. */
  | 'before-headers'
  /** The emulator sent its first bytes (one throttle tick). */
  | 'first-bytes'
  /** The emulator sent a seeded share of the recording. */
  | 'mid'
  /** The worker published the last byte (its frontier says the whole size): before the rename, mostly. */
  | 'last-byte'
  /** The worker wrote the identity record over the frontier file, and has not renamed it or the recording. */
  | 'identity-written'
  /** The final file appeared: the rename is done, its clean-up may not be. */
  | 'renamed';

interface Point {
  index: number;
  size: number;
  killAt: KillAt;
  /** Media bytes the emulator has sent when the worker is killed. */
  target: number;
  clients: ClientPlan[];
}

interface ClientPlan {
  id: string;
  range: string | undefined;
  /** The bytes it must get: [start, end) of the recording. */
  start: number;
  end: number;
}

interface ClientOutcome {
  plan: ClientPlan;
  status: number;
  body: Buffer;
  /** Set when the response was cut (the connection closed before the body was complete). */
  error?: string;
}

/** What was on disk the moment the killed worker was dead, before anyone could take over. */
interface AtKill {
  sent: number;
  renamed: boolean;
  /** The frontier the killed worker had published, or undefined when it had no generation yet. */
  published: number | undefined;
  /** Whether the frontier file held the identity record (the commit had written it, not renamed it). */
  record: boolean;
  /** Files of the call other than the final file, its identity record and the lock file. */
  others: string[];
}

function planPoint(seed: number, index: number, count: number): Point {
  const random = seededRandom(seed, `writer-killed/${index}`);
  const size = between(random, 300_000, 600_000);
  // With five points or more, the first two and the last three are the edges; the rest are seeded.
  const edges = count >= 5;
  let killAt: KillAt = 'mid';
  if (edges && index === 0) killAt = 'before-headers';
  else if (edges && index === 1) killAt = 'first-bytes';
  else if (edges && index === count - 3) killAt = 'last-byte';
  else if (edges && index === count - 2) killAt = 'identity-written';
  else if (edges && index === count - 1) killAt = 'renamed';
  const target =
    killAt === 'before-headers'
      ? 0
      : killAt === 'first-bytes'
        ? 1
        : killAt === 'mid'
          ? between(random, Math.ceil(size * 0.05), Math.floor(size * 0.95))
          : size;
  const clients: ClientPlan[] = [];
  const n = between(random, 6, 10);
  for (let j = 0; j < n; j++) {
    const id = `wk${index}-c${j}`;
    // Every third client asks for a range near the start; the others for the whole recording.
    const shape = j % 3 === 2 ? between(random, 0, 2) : -1;
    if (shape === 0) clients.push({ id, range: 'bytes=0-', start: 0, end: size });
    else if (shape === 1) {
      const a = between(random, 1, NEAR_RANGE);
      clients.push({ id, range: `bytes=${a}-`, start: a, end: size });
    } else if (shape === 2) {
      const a = between(random, 0, NEAR_RANGE);
      const b = between(random, a, a + 50_000);
      clients.push({ id, range: `bytes=${a}-${b}`, start: a, end: b + 1 });
    } else clients.push({ id, range: undefined, start: 0, end: size });
  }
  return { index, size, killAt, target, clients };
}

describe('recgate serve --workers 2: the downloading worker killed with SIGKILL', () => {
  it('every body complete and exact or cut, the takeover finishes, the file is right, the worker comes back', async (t) => {
    const seed = faultSeed();
    const count = faultRepeat(20);
    t.diagnostic(`seed ${seed}, ${count} points, bandwidth ${BANDWIDTH} B/s`);

    const emulator = await startEmulator({ port: 0, logger: false });
    const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-writer-killed-'));
    const dir = path.join(dataDir, 'recordings');
    let server: ServeProcess | undefined;
    t.after(async () => {
      await server?.stop();
      await emulator.close();
      await rm(dataDir, { recursive: true, force: true });
    });
    server = await startServeProcess({
      workers: 2,
      dataDir,
      emulator,
      // The test kills a worker of the same slot many times a minute on purpose: no giving up, no backoff.
      primary: { restartDelayMs: 50, maxRestartDelayMs: 50, maxCrashes: 1_000_000 },
    });
    const gateway = server;
    const token = await new JwtAuth(JWT_SECRET).sign('acme', 600);
    const store = new FsRecordingStore({ dir });
    t.after(() => store.close());

    const summary = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const point = planPoint(seed, i, count);
      await t.test(`point ${i}: kill ${point.killAt}`, async (st) => {
        const outcome = await runPoint(st, gateway, emulator, store, dir, token, point);
        summary.set(outcome, (summary.get(outcome) ?? 0) + 1);
      });
    }
    t.diagnostic(
      `outcomes: ${[...summary]
        .sort()
        .map(([k, v]) => `${k} ×${v}`)
        .join(', ')}`,
    );
  });
});

/** One point: a fresh recording, its clients, the kill, and every check. Resolves to a short outcome label. */
async function runPoint(
  t: TestContext,
  server: ServeProcess,
  emulator: Emulator,
  store: FsRecordingStore,
  dir: string,
  token: string,
  point: Point,
): Promise<string> {
  const label = `point ${point.index}`;
  emulator.setThrottle({ ttfbMs: 0, bandwidth: 0 });
  const rec = await emulator.createRecording({ bytes: point.size });
  const sid = rec.call_sid;
  const recordingSid = rec.recording_sid!;
  await registerCall(server, sid, recordingSid);
  const source = await upstreamBytes(emulator, recordingSid);
  assert.equal(sha(source), rec.sha256);
  assert.equal(source.length, point.size);
  emulator.reset();
  emulator.setThrottle({
    ttfbMs: point.killAt === 'before-headers' ? SLOW_TTFB_MS : 0,
    bandwidth: BANDWIDTH,
  });

  // Both workers up (after a failed point too), so that clients spread over both and one survives the kill.
  await waitFor(() => liveWorkers(server) === 2, `${label}: two workers listening`);
  const workersBefore = listeningPids(server);
  const logStart = server.logs.length;
  const pending = point.clients.map((plan) => fetchOnce(server.url, sid, token, plan));

  const holder = Number(
    (await waitFor(
      () => server.logs.slice(logStart).find((l) => l.event === 'cache_miss' && l.callSid === sid),
      `${label}: a worker logs cache_miss`,
    ))!.pid,
  );
  await waitFor(() => killConditionMet(emulator, recordingSid, point), `${label}: the kill condition`, 1);
  spinToEdge(dir, sid, point);
  process.kill(holder, 'SIGKILL');
  waitDead(holder);
  const atKill = snapshot(emulator, dir, sid, recordingSid);
  t.diagnostic(
    `${label}: size ${point.size}, kill ${point.killAt} at ${point.target} B ` +
      `(${((100 * point.target) / point.size).toFixed(1)} %): worker ${holder} killed with ${atKill.sent} B ` +
      `sent, ${atKill.published ?? 'no generation'} published, ` +
      `${atKill.renamed ? `renamed${atKill.others.length > 0 ? `, left ${atKill.others.join(' ')}` : ''}` : 'not renamed'}`,
  );

  const outcomes = await withDeadline(Promise.all(pending), `${label}: the clients`);
  let logs = server.logs.slice(logStart);
  const pidOf = (id: string) => logs.find((l) => l.reqId === id && typeof l.pid === 'number')?.pid;
  let complete = 0;
  let cut = 0;
  let hung = 0;
  let onSurvivor = 0;
  for (const o of outcomes) {
    const expected = source.subarray(o.plan.start, o.plan.end);
    const pid = pidOf(o.plan.id);
    const where = `${label} ${o.plan.id} (${o.plan.range ?? 'full'}, pid ${pid ?? '?'})`;
    // Never wrong bytes: a cut body is a correct prefix, a complete one is the whole slice.
    assert.ok(o.body.equals(expected.subarray(0, o.body.length)), `${where}: wrong bytes`);
    if (pid !== undefined && pid !== holder) {
      onSurvivor++;
      assert.equal(o.error, undefined, `${where}: the surviving worker's client was cut`);
    }
    if (o.error === undefined) {
      complete++;
      assert.equal(o.status, o.plan.range === undefined ? 200 : 206, where);
      assert.equal(sha(o.body), sha(expected), `${where}: complete but not the recording`);
    } else {
      cut++;
      if (o.error.includes('HeadersTimeoutError')) {
        hung++;
        assert.equal(pid, undefined, `${where}: no headers, yet a worker logged the request`);
      }
      assert.ok(o.body.length < expected.length, `${where}: cut after the whole body (${o.error})`);
    }
  }
  assert.ok(onSurvivor > 0, `${label}: no client was on the surviving worker`);
  // The primary hands a worker one connection at a time, so at most one can be caught in flight.
  assert.ok(hung <= 1, `${label}: ${hung} clients never answered`);

  // A worker killed between the rename and its clean-up leaves those files to the replacement's start-up sweep.
  const exit = await waitFor(
    () => server.logs.find((l) => l.event === 'worker_exit' && l.workerPid === holder),
    `${label}: the primary saw worker ${holder} die`,
  );
  assert.equal(exit!.signal, 'SIGKILL');
  const replacement = await waitFor(
    () => [...listeningPids(server)].find((pid) => !workersBefore.has(pid)),
    `${label}: a replacement worker listens`,
  );
  // The last holder unlinks the lock file as it lets go, just after the commit; when nobody took the lock
  // after the kill, the dead holder's file stays until a sweep.
  const names = await settledFiles(dir, sid, { timeoutMs: DEADLINE_MS, lockFileAfterMs: 3000 }).catch(
    (err: Error) => assert.fail(`${label}: ${err.message}`),
  );
  const left = names.filter((n) => n === `.${sid}.lock`);
  const final = await readFile(path.join(dir, `${sid}.mp3`));
  assert.equal(sha(final), rec.sha256, `${label}: the final file`);
  const handle = await store.openFinal(sid);
  assert.ok(handle, `${label}: the final file opens`);
  await handle.close();
  assert.equal(handle.info.identity?.recordingSid, recordingSid, `${label}: the identity record`);

  if (!atKill.renamed) {
    // Logged after the commit, which readers may see finish before the line reaches us.
    await waitFor(
      () => server.logs.slice(logStart).find((l) => l.event === 'recording_saved' && l.callSid === sid),
      `${label}: recording_saved`,
    );
  }
  logs = server.logs.slice(logStart);
  const stats = emulator.stats();
  const requests = stats.media_requests[recordingSid] ?? 0;
  const events = (name: string) => logs.filter((l) => l.event === name && l.callSid === sid);
  const resumed = events('download_resumed').map((l) => l.offset as number);
  const takeovers = events('takeover');
  let outcome: string;
  if (atKill.renamed) {
    outcome =
      atKill.others.length > 0 ? 'killed after the rename, before its clean-up' : 'killed after the commit';
    assert.equal(requests, 1, `${label}: ${outcome}, upstream requests`);
    assert.deepEqual(takeovers, [], `${label}: nothing to take over`);
  } else if (atKill.published === point.size) {
    outcome = atKill.record
      ? 'killed with the identity record written over the frontier, before the renames'
      : 'killed after the last byte, before the rename';
    assert.equal(requests, 1, `${label}: ${outcome}, upstream requests`);
    assert.deepEqual(resumed, [point.size], `${label}: the takeover found the download complete`);
  } else if (atKill.published !== undefined && atKill.published > 0) {
    outcome = 'killed mid-body';
    assert.equal(requests, 2, `${label}: ${outcome}, upstream requests`);
    assert.deepEqual(resumed, [atKill.published], `${label}: the takeover resumed where the frontier was`);
  } else {
    outcome =
      atKill.published === undefined ? 'killed before a generation' : 'killed before a byte published';
    assert.equal(requests, 2, `${label}: ${outcome}, upstream requests`);
    assert.deepEqual(resumed, [], `${label}: nothing to resume`);
  }
  if (!atKill.renamed) {
    assert.equal(takeovers.length, 1, `${label}: one takeover`);
    assert.notEqual(takeovers[0]!.pid, holder);
    const saved = events('recording_saved');
    assert.equal(saved.length, 1, `${label}: saved once`);
    assert.equal(saved[0]!.pid, takeovers[0]!.pid, `${label}: saved by the worker that took over`);
  }

  const answeredBy = await servedByReplacement(server, sid, token, source, replacement!, label);

  t.diagnostic(
    `${label}: ${outcome}; clients ${complete} complete, ${cut} cut${hung > 0 ? ` (${hung} never answered: in flight to the killed worker)` : ''} (${onSurvivor} on the survivor); ` +
      `upstream requests ${requests} (${stats.media_bytes[recordingSid] ?? 0} B` +
      `${resumed.length > 0 ? `, resumed at ${resumed.join(',')}` : ''}); ` +
      `replacement ${replacement} answered after ${answeredBy} request(s)` +
      `${left.length > 0 ? `; also left: ${left.join(' ')}` : ''}`,
  );
  return outcome;
}

function killConditionMet(emulator: Emulator, recordingSid: string, point: Point): boolean {
  const stats = emulator.stats();
  if (point.killAt === 'before-headers') return (stats.media_requests[recordingSid] ?? 0) >= 1;
  return (stats.media_bytes[recordingSid] ?? 0) >= point.target;
}

/**
 * For the points past the last byte: once the emulator sent it, watches the files synchronously (nothing
 * else in this process needs to run meanwhile) so the kill lands within a few microseconds of the moment.
 */
function spinToEdge(dir: string, sid: string, point: Point): void {
  if (point.killAt !== 'last-byte' && point.killAt !== 'identity-written' && point.killAt !== 'renamed')
    return;
  const final = path.join(dir, `${sid}.mp3`);
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    // A point that finds the file renamed already is killed at once (and reported as such).
    if (existsSync(final)) return;
    if (point.killAt === 'last-byte' && publishedFrontier(dir, sid) === point.size) return;
    if (point.killAt === 'identity-written' && frontierText(dir, sid)?.startsWith('{')) return;
  }
  throw new Error(`point ${point.index}: the download did not get to its ${point.killAt} edge`);
}

/** The text of the current generation's frontier file, or undefined when there is none. */
function frontierText(dir: string, sid: string): string | undefined {
  try {
    const meta = JSON.parse(readFileSync(path.join(dir, `.${sid}.mp3.meta`), 'utf8')) as { fileId: string };
    return readFileSync(path.join(dir, `.${sid}.mp3.${meta.fileId}.frontier`), 'utf8');
  } catch (err) {
    // A pointer being replaced or a generation being removed reads as none.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined;
    throw err;
  }
}

/**
 * The frontier of the current generation: its line's number, or the size the identity record written over
 * it at the commit states (every byte is there by then); undefined when there is none.
 */
function publishedFrontier(dir: string, sid: string): number | undefined {
  const text = frontierText(dir, sid);
  if (text === undefined) return undefined;
  if (text.startsWith('{')) {
    try {
      return (JSON.parse(text) as { size: number }).size;
    } catch {
      return undefined;
    }
  }
  const match = /^\S+ (\d{16}) (\d{16})\n$/.exec(text);
  assert.ok(match && match[1] === match[2], `a torn frontier line: ${text}`);
  return Number(match[1]);
}

/** Blocks until `pid` is dead (see {@link isDead}): its file locks are released from then on. */
function waitDead(pid: number): void {
  const deadline = Date.now() + 5000;
  while (!isDead(pid)) {
    if (Date.now() > deadline) throw new Error(`worker ${pid} still runs 5 s after SIGKILL`);
  }
}

/**
 * Whether `pid` is dead: a zombie or gone. Linux tells from /proc; elsewhere only once the primary reaped
 * it, by which time a takeover may have begun.
 */
function isDead(pid: number): boolean {
  try {
    if (!existsSync('/proc/self/stat')) {
      process.kill(pid, 0);
      return false;
    }
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

/**
 * Read synchronously right after the holder died: a taking-over worker first has to notice the free lock
 * (it polls every ~15 ms) before it can move anything.
 */
function snapshot(emulator: Emulator, dir: string, sid: string, recordingSid: string): AtKill {
  const stats = emulator.stats();
  return {
    sent: stats.media_bytes[recordingSid] ?? 0,
    renamed: existsSync(path.join(dir, `${sid}.mp3`)),
    published: publishedFrontier(dir, sid),
    record: frontierText(dir, sid)?.startsWith('{') === true,
    others: readdirSync(dir).filter(
      (n) => n.includes(sid) && n !== `${sid}.mp3` && n !== `.${sid}.mp3.id` && n !== `.${sid}.lock`,
    ),
  };
}

/** Asks (each time on a new connection) until the replacement worker answers; returns how many asks it took. */
async function servedByReplacement(
  server: ServeProcess,
  sid: string,
  token: string,
  source: Buffer,
  replacement: number,
  label: string,
): Promise<number> {
  for (let k = 1; k <= 20; k++) {
    const plan: ClientPlan = {
      id: `${label.replace(' ', '')}-after${k}`,
      range: undefined,
      start: 0,
      end: source.length,
    };
    const o = await fetchOnce(server.url, sid, token, plan);
    assert.equal(o.error, undefined, `${label}: the gateway after the kill: ${o.error}`);
    assert.equal(o.status, 200);
    assert.ok(o.body.equals(source), `${label}: the gateway after the kill served other bytes`);
    const by = await waitFor(
      () => server.logs.find((l) => l.reqId === plan.id && l.event === 'serve'),
      `${label}: ${plan.id} logged`,
    );
    if (by!.pid === replacement) return k;
  }
  assert.fail(`${label}: the replacement worker ${replacement} never answered`);
}

/** One request on a connection of its own, read to the end or until it is cut. */
async function fetchOnce(url: string, sid: string, token: string, plan: ClientPlan): Promise<ClientOutcome> {
  const agent = new Agent({ connections: 1, pipelining: 0 });
  const chunks: Buffer[] = [];
  let status = 0;
  try {
    const res = await request(`${url}/api/calls/${sid}/download`, {
      dispatcher: agent,
      headers: {
        authorization: `Bearer ${token}`,
        'x-request-id': plan.id,
        ...(plan.range === undefined ? {} : { range: plan.range }),
      },
      headersTimeout: HEADERS_MS,
      bodyTimeout: DEADLINE_MS,
    });
    status = res.statusCode;
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    return { plan, status, body: Buffer.concat(chunks) };
  } catch (err) {
    return { plan, status, body: Buffer.concat(chunks), error: String(err) };
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}

async function registerCall(server: ServeProcess, sid: string, recordingSid: string): Promise<void> {
  const res = await request(`${server.url}/api/admin/calls/${sid}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ business_id: 'acme', recording_sid: recordingSid }),
  });
  await res.body.dump();
  assert.equal(res.statusCode, 201);
}

async function upstreamBytes(emulator: Emulator, recordingSid: string): Promise<Buffer> {
  const basic = Buffer.from(`${emulator.accountSid}:${emulator.authToken}`).toString('base64');
  const res = await request(
    `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/Recordings/${recordingSid}.mp3`,
    { headers: { authorization: `Basic ${basic}` } },
  );
  assert.equal(res.statusCode, 200);
  return Buffer.from(await res.body.arrayBuffer());
}

/** Pids of workers that logged Fastify's "Server listening". */
function listeningPids(server: ServeProcess): Set<number> {
  return new Set(
    server.logs
      .filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening'))
      .map((l) => l.pid as number),
  );
}

/** Workers that listened and have not died. */
function liveWorkers(server: ServeProcess): number {
  const exited = new Set(server.logs.filter((l) => l.event === 'worker_exit').map((l) => l.workerPid));
  return [...listeningPids(server)].filter((pid) => !exited.has(pid) && !isDead(pid)).length;
}

/** Polls `probe` until it returns something truthy; fails after DEADLINE_MS with `what`. */
async function waitFor<T>(probe: () => T | undefined | false, what: string, everyMs = 10): Promise<T> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function withDeadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), DEADLINE_MS * 2);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}
