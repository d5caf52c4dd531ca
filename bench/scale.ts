/**
 * `npm run bench:scale [-- --calls 10000000 --businesses 10000 --backends sqlite,postgres]`: the call log at
 * scale. For each backend it generates (once; later runs reuse it) a call log of `--calls` calls across
 * `--businesses` businesses, and a peer log of `--peer-calls` calls with as many calls per business, then
 * measures, in the same run:
 * - the download path's lookup and resolution: `getForBusiness` then the resolver, for a call playing its
 *   own recording and for a child leg playing its parent's (one more lookup: the owner's tenancy check);
 * - a page of the calls list (`CallLog.list`, keyset cursors) at the first page, the middle, 98% deep and
 *   the undated tail, for a typical business and for the largest one; beside it the same page fetched with
 *   OFFSET, the pagination keyset replaces.
 * Before measuring it checks with EXPLAIN that every list query and lookup reads an index, in the order the
 * page wants (no sort step, no full scan), for a typical and the largest business.
 *
 * Data: call `i` is `CA{i as 32 hex digits}`. The first `--big-share` of the calls belong to `biz-0` (the
 * largest business); the rest go round-robin to `biz-1` … Every fifth call is a child leg playing its
 * parent's recording (the same business's previous call); every hundredth has no start time (sorted last).
 * Generated logs live in `bench/.data` (SQLite files) and in PostgreSQL schemas `recgate_scale_…`, keyed by
 * every parameter, the generator's version and the schema's migration count; delete them to regenerate.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { SingleBar } from 'cli-progress';
import pg from 'pg';
import type { CallLog, CallRecord } from '../src/call-log/call-log.js';
import { type CallRow, encodeCursor, rowToRecord } from '../src/call-log/common.js';
import { POSTGRES_MIGRATIONS } from '../src/call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../src/call-log/migrations/sqlite-migrations.js';
import { SQL as PG_SQL, PostgresCallLog } from '../src/call-log/postgres.js';
import { SQL as SQLITE_SQL, SqliteCallLog } from '../src/call-log/sqlite.js';
import { RecordingResolver } from '../src/resolution/resolver.js';
import { RecordingState } from '../src/resolution/state.js';
import type { CallSid } from '../src/sid.js';
import type { Upstream } from '../src/upstream/upstream.js';
import { seededRandom } from '../test/faults/seed.js';
import { fmtNum, percentile } from './lib/stats.js';

export type Backend = 'sqlite' | 'postgres';

/** Bump when the generated rows change, so cached logs are not reused. */
const GENERATOR_VERSION = 1;
/** The calls list's default page size (`GET /api/calls`). */
const PAGE = 50;
const BASE_MS = Date.parse('2020-01-01T00:00:00Z');
/** Targets of issue 14, milliseconds at p99. */
export const TARGETS = { lookupP99Ms: 1, pageP99Ms: 20 } as const;

export interface Shape {
  calls: number;
  businesses: number;
  /** Share of the calls that belong to `biz-0`, the largest business. */
  bigShare: number;
}

export interface ScaleOptions extends Shape {
  backends: Backend[];
  /** Calls in the peer log (as many per business as the main one). @default 10000 */
  peerCalls?: number;
  /** Samples per lookup kind. @default 5000 */
  lookups?: number;
  /** Samples per list position. @default 300 */
  pages?: number;
  postgresUrl?: string | undefined;
  /** Where SQLite logs are kept. @default bench/.data */
  dataDir?: string;
  /** Prefix of the PostgreSQL schemas. @default recgate_scale */
  schemaPrefix?: string;
  /** Show a progress bar while generating (on a terminal). @default false */
  progress?: boolean;
  log?: (line: string) => void;
}

/** Latency percentiles of one measure, milliseconds. */
export interface Figure {
  p50: number;
  p99: number;
  samples: number;
}

export interface ScaleRow {
  backend: Backend;
  measure: string;
  /** `lookup` or `page` (which target applies). */
  kind: 'lookup' | 'page';
  main: Figure;
  /** The same measure on the peer log (`--peer-calls`). */
  small: Figure;
  /** The same page fetched with OFFSET, on the main log (pages only). */
  offset?: Figure;
}

export interface ScaleResult {
  rows: ScaleRow[];
  /** Seconds spent generating logs in this run (0 when every log came from the cache). */
  generatedS: number;
  /** Per backend, the plans checked: query name → what the plan reads. */
  plans: Record<string, string[]>;
  shapes: { main: Shape; small: Shape };
}

// ---------------------------------------------------------------------------------------------------------
// The generated data, as functions of the call's index.

const hex = (i: number) => i.toString(16).padStart(32, '0');
export const callSidAt = (i: number) => `CA${hex(i)}` as CallSid;

function bigCount(shape: Shape): number {
  return shape.businesses === 1 ? shape.calls : Math.floor(shape.calls * shape.bigShare);
}

/** The business of call `i`, and the stride to that business's previous call. */
export function businessOf(shape: Shape, i: number): { business: number; stride: number; first: number } {
  const big = bigCount(shape);
  if (i < big) return { business: 0, stride: 1, first: 0 };
  const others = shape.businesses - 1;
  return { business: 1 + ((i - big) % others), stride: others, first: big };
}

/** How many calls business `b` has. */
export function callsOf(shape: Shape, b: number): number {
  const big = bigCount(shape);
  if (b === 0) return big;
  const rest = shape.calls - big;
  const others = shape.businesses - 1;
  return rest <= b - 1 ? 0 : Math.floor((rest - b) / others) + 1;
}

interface GeneratedCall {
  callSid: string;
  businessId: string;
  parent: string | null;
  recordingSid: string;
  owner: string;
  startedAt: string | null;
  createdAt: string;
}

export function callAt(shape: Shape, i: number): GeneratedCall {
  const { business, stride, first } = businessOf(shape, i);
  const child = i % 5 === 4 && i - stride >= first;
  const ownerIndex = child ? i - stride : i;
  const createdMs = BASE_MS + i * 1000 + 500;
  return {
    callSid: callSidAt(i),
    businessId: `biz-${business}`,
    parent: child ? callSidAt(i - stride) : null,
    recordingSid: `RE${hex(ownerIndex)}`,
    owner: callSidAt(ownerIndex),
    startedAt: i % 100 === 99 ? null : new Date(BASE_MS + i * 1000).toISOString(),
    createdAt: new Date(createdMs).toISOString(),
  };
}

/** The same rows as {@link callAt}, computed by PostgreSQL for `i` in [$1, $2]. $3: calls in biz-0, $4: others. */
const PG_GENERATE = `
  INSERT INTO calls (call_sid, business_id, parent_call_sid, recording_sid, recording_owner_call_sid,
    recording_state, recording_size, recording_status, direction, from_number, to_number, started_at,
    duration_s, created_at, updated_at)
  SELECT 'CA' || lpad(to_hex(i), 32, '0'), 'biz-' || b,
    CASE WHEN child THEN 'CA' || lpad(to_hex(i - stride), 32, '0') END,
    'RE' || lpad(to_hex(CASE WHEN child THEN i - stride ELSE i END), 32, '0'),
    'CA' || lpad(to_hex(CASE WHEN child THEN i - stride ELSE i END), 32, '0'),
    'available', 1000000 + (i % 1000) * 1000, 'completed',
    CASE WHEN child THEN 'outbound-dial' ELSE 'inbound' END, '+1555' || lpad((i % 10000000)::text, 7, '0'),
    '+1666' || lpad((i % 9999991)::text, 7, '0'),
    CASE WHEN i % 100 = 99 THEN NULL ELSE to_timestamp(${BASE_MS / 1000}::double precision + i) END,
    30 + i % 600, to_timestamp(${BASE_MS / 1000}::double precision + i + 0.5),
    to_timestamp(${BASE_MS / 1000}::double precision + i + 0.5)
  FROM (
    SELECT i, b, stride, (i % 5 = 4 AND i - stride >= first) AS child FROM (
      SELECT i,
        CASE WHEN i < $3 THEN 0 ELSE 1 + (i - $3) % NULLIF($4, 0) END AS b,
        CASE WHEN i < $3 THEN 1 ELSE $4 END AS stride,
        CASE WHEN i < $3 THEN 0 ELSE $3 END AS first
      FROM generate_series($1::bigint, $2::bigint) AS i
    ) AS s
  ) AS t`;

// ---------------------------------------------------------------------------------------------------------
// Generation and caching.

function cacheKey(shape: Shape, migrations: number): string {
  const share = Math.round(shape.bigShare * 10_000);
  return `${shape.calls}_${shape.businesses}_${share}_g${GENERATOR_VERSION}_m${migrations}`;
}

const CHUNK = 100_000;

function progressBar(enabled: boolean, label: string, total: number) {
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {value}/{total} calls | {duration_formatted}`,
    noTTYOutput: false,
    stream: process.stderr,
    hideCursor: true,
  });
  if (enabled) bar.start(total, 0);
  return {
    update: (n: number) => enabled && bar.update(n),
    stop: () => enabled && bar.stop(),
  };
}

/**
 * The SQLite log for `shape`, generated unless the cache has it: the real migrations, the secondary
 * indexes dropped, every row inserted in one transaction with one prepared statement, then the indexes
 * created again from their own definitions. Written under a temporary name and renamed when complete, so
 * an interrupted run is never reused.
 */
async function sqliteLog(
  shape: Shape,
  dir: string,
  progress: boolean,
): Promise<{ path: string; generated: boolean }> {
  const path = join(dir, `scale_${cacheKey(shape, SQLITE_MIGRATIONS.length)}.db`);
  mkdirSync(dir, { recursive: true });
  try {
    new Database(path, { fileMustExist: true, readonly: true }).close();
    return { path, generated: false };
  } catch {
    // Not cached yet.
  }
  const partial = `${path}.partial`;
  for (const suffix of ['', '-wal', '-shm']) rmSync(`${partial}${suffix}`, { force: true });
  const log = new SqliteCallLog(partial);
  await log.migrate();
  await log.close();
  const db = new Database(partial);
  try {
    // The call log left the file in WAL mode; a bulk load needs no journal at all (a failed one is discarded).
    db.pragma('journal_mode = DELETE');
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -1000000');
    const indexes = db
      .prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' AND sql NOT NULL",
      )
      .all() as Array<{ name: string; sql: string }>;
    for (const index of indexes) db.exec(`DROP INDEX ${index.name}`);
    const insert = db.prepare(`
      INSERT INTO calls (call_sid, business_id, parent_call_sid, recording_sid, recording_owner_call_sid,
        recording_state, recording_size, recording_status, direction, from_number, to_number, started_at,
        duration_s, created_at, updated_at)
      VALUES (?, ?, ?, ?, ?, 'available', ?, 'completed', ?, ?, ?, ?, ?, ?, ?)`);
    const bar = progressBar(progress, `sqlite ${fmtNum(shape.calls)}`, shape.calls);
    db.transaction(() => {
      for (let i = 0; i < shape.calls; i++) {
        const c = callAt(shape, i);
        insert.run(
          c.callSid,
          c.businessId,
          c.parent,
          c.recordingSid,
          c.owner,
          1_000_000 + (i % 1000) * 1000,
          c.parent ? 'outbound-dial' : 'inbound',
          `+1555${String(i % 10_000_000).padStart(7, '0')}`,
          `+1666${String(i % 9_999_991).padStart(7, '0')}`,
          c.startedAt,
          30 + (i % 600),
          c.createdAt,
          c.createdAt,
        );
        if (i % CHUNK === CHUNK - 1) bar.update(i + 1);
      }
    })();
    bar.update(shape.calls);
    bar.stop();
    for (const index of indexes) db.exec(index.sql);
  } finally {
    db.close();
  }
  renameSync(partial, path);
  return { path, generated: true };
}

/** The PostgreSQL log for `shape`, generated unless a complete one exists (its schema's comment says so). */
async function postgresLog(
  url: string,
  shape: Shape,
  prefix: string,
  progress: boolean,
): Promise<{ schema: string; generated: boolean }> {
  const schema = `${prefix}_${cacheKey(shape, POSTGRES_MIGRATIONS.length)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ done: string | null }>(
      `SELECT obj_description(oid, 'pg_namespace') AS done FROM pg_namespace WHERE nspname = $1`,
      [schema],
    );
    if (rows[0]?.done === 'complete') return { schema, generated: false };
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 1 });
    await log.migrate();
    await log.close();
    await admin.query(`SET search_path = ${schema}`);
    await admin.query(`SET maintenance_work_mem = '512MB'`);
    const { rows: indexes } = await admin.query<{ indexname: string; indexdef: string }>(
      `SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = $1 AND tablename = 'calls' AND indexname <> 'calls_pkey'`,
      [schema],
    );
    for (const index of indexes) await admin.query(`DROP INDEX ${index.indexname}`);
    const bar = progressBar(progress, `postgres ${fmtNum(shape.calls)}`, shape.calls);
    const big = bigCount(shape);
    const others = shape.businesses - 1;
    for (let from = 0; from < shape.calls; from += CHUNK * 10) {
      const to = Math.min(shape.calls, from + CHUNK * 10) - 1;
      await admin.query(PG_GENERATE, [from, to, big, others]);
      bar.update(to + 1);
    }
    bar.stop();
    for (const index of indexes) await admin.query(index.indexdef);
    await admin.query('VACUUM ANALYZE calls');
    await admin.query(`COMMENT ON SCHEMA ${schema} IS 'complete'`);
    return { schema, generated: true };
  } finally {
    await admin.end();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Measuring.

/** The bench must never reach the upstream: every generated call's recording is already resolved. */
const NO_UPSTREAM = new Proxy(
  {},
  {
    get: () => () => {
      throw new Error('bench:scale reached the upstream: a generated call was not resolved');
    },
  },
) as Upstream;

/** A log under test, with the raw access the bench needs beside the CallLog (cursors, OFFSET, EXPLAIN). */
interface Subject {
  log: CallLog;
  /** The sort key of the business's row at `offset` (0 = newest), as a page cursor. */
  cursorAt(business: string, offset: number): Promise<string>;
  /** The OFFSET page: `limit` rows from `offset`, mapped to records like the CallLog does. */
  offsetPage(business: string, offset: number, limit: number): Promise<CallRecord[]>;
  /**
   * Checks that every list and lookup query seeks the index (EXPLAIN), with cursors at the business's rows
   * `dated` (a call with a start time) and `undated`; throws naming the query that does not. Returns the
   * plans, one line each.
   */
  checkPlans(business: string, dated: number, undated: number): Promise<string[]>;
  close(): Promise<void>;
}

const ORDER_COLUMNS = 'ORDER BY started_at DESC NULLS LAST, created_at DESC, call_sid DESC';

function openSqlite(path: string): Subject {
  const log = new SqliteCallLog(path);
  const db = new Database(path, { readonly: true });
  const keyAt = db.prepare(
    `SELECT started_at, created_at, call_sid FROM calls WHERE business_id = ? ${ORDER_COLUMNS} LIMIT 1 OFFSET ?`,
  );
  const page = db.prepare(`SELECT * FROM calls WHERE business_id = ? ${ORDER_COLUMNS} LIMIT ? OFFSET ?`);
  const key = (business: string, offset: number) => {
    const row = keyAt.get(business, offset) as Pick<CallRow, 'started_at' | 'created_at' | 'call_sid'>;
    return {
      startedAt: row.started_at as string | null,
      createdAt: row.created_at as string,
      callSid: row.call_sid as CallSid,
    };
  };
  return {
    log,
    cursorAt: async (business, offset) => encodeCursor(key(business, offset)),
    offsetPage: async (business, offset, limit) =>
      (page.all(business, limit + 1, offset) as CallRow[]).slice(0, limit).map(rowToRecord),
    async checkPlans(business, dated, undated) {
      const d = key(business, dated);
      const u = key(business, undated);
      if (d.startedAt === null || u.startedAt !== null) throw new Error('bench cursors in the wrong region');
      const page = { businessId: business, limit: PAGE + 1 };
      const queries: Array<[string, string, unknown, RegExp]> = [
        ['firstPage', SQLITE_SQL.firstPage, page, /\(business_id=\?\)/],
        ['afterStarted', SQLITE_SQL.afterStarted, { ...page, ...d }, /started_at<\?/],
        ['firstUnstarted', SQLITE_SQL.firstUnstarted, page, /started_at=\?/],
        ['afterUnstarted', SQLITE_SQL.afterUnstarted, { ...page, ...u }, /\(created_at,call_sid\)<\(\?,\?\)/],
        // getForBusiness reads by `get` too (and compares the business), through the records cache.
        ['get', SQLITE_SQL.get, [d.callSid], /INDEX sqlite_autoindex_calls_1/],
      ];
      return queries.map(([name, sql, args, seek]) => {
        const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(args) as Array<{ detail: string }>)
          .map((r) => r.detail)
          .join('; ');
        // SEARCH with the expected range: the index is entered at the cursor, not walked from the start.
        if (
          !/^SEARCH calls USING (COVERING )?INDEX/.test(plan) ||
          !seek.test(plan) ||
          /TEMP B-TREE/.test(plan)
        ) {
          throw new Error(`sqlite ${name} for ${business} does not seek an index in order: ${plan}`);
        }
        return `${name}: ${plan}`;
      });
    },
    async close() {
      db.close();
      await log.close();
    },
  };
}

interface PlanNode {
  'Node Type': string;
  'Actual Rows': number;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

/** The nodes of a plan that read the table or an index. */
function scansOf(node: PlanNode): PlanNode[] {
  const own = /Scan/.test(node['Node Type']) ? [node] : [];
  return own.concat(...(node.Plans ?? []).map(scansOf));
}

function openPostgres(url: string, schema: string): Subject {
  const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 2 });
  const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
  const connected = client.connect();
  const key = async (business: string, offset: number) => {
    await connected;
    const { rows } = await client.query<Pick<CallRow, 'started_at' | 'created_at' | 'call_sid'>>(
      `SELECT started_at, created_at, call_sid FROM calls WHERE business_id = $1 ${ORDER_COLUMNS} LIMIT 1 OFFSET $2`,
      [business, offset],
    );
    const row = rows[0]!;
    const iso = (v: string | Date | null) => (v === null ? null : v instanceof Date ? v.toISOString() : v);
    return {
      startedAt: iso(row.started_at),
      createdAt: iso(row.created_at)!,
      callSid: row.call_sid as CallSid,
    };
  };
  return {
    log,
    cursorAt: async (business, offset) => encodeCursor(await key(business, offset)),
    async offsetPage(business, offset, limit) {
      await connected;
      const { rows } = await client.query<CallRow>(
        `SELECT * FROM calls WHERE business_id = $1 ${ORDER_COLUMNS} LIMIT $2 OFFSET $3`,
        [business, limit + 1, offset],
      );
      return rows.slice(0, limit).map(rowToRecord);
    },
    async checkPlans(business, dated, undated) {
      const d = await key(business, dated);
      const u = await key(business, undated);
      if (d.startedAt === null || u.startedAt !== null) throw new Error('bench cursors in the wrong region');
      // Each with what its index condition must hold: the cursor, so the scan starts there.
      const queries: Array<[string, string, unknown[], RegExp]> = [
        ['firstPage', PG_SQL.firstPage, [business, PAGE + 1], /business_id =/],
        [
          'afterStarted',
          PG_SQL.afterStarted,
          [business, PAGE + 1, d.createdAt, d.callSid, d.startedAt],
          /ROW\(started_at, created_at, call_sid\) </,
        ],
        ['firstUnstarted', PG_SQL.firstUnstarted, [business, PAGE + 1], /started_at IS NULL/],
        [
          'afterUnstarted',
          PG_SQL.afterUnstarted,
          [business, PAGE + 1, u.createdAt, u.callSid],
          /ROW\(created_at, call_sid\) </,
        ],
        ['getForBusiness', PG_SQL.getForBusiness, [d.callSid, business], /call_sid =/],
        ['get', PG_SQL.get, [d.callSid], /call_sid =/],
      ];
      const out: string[] = [];
      for (const [name, sql, args, seek] of queries) {
        const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(
          `EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`,
          args,
        );
        const scans = scansOf(rows[0]!['QUERY PLAN'][0].Plan);
        const read = Math.max(0, ...scans.map((n) => n['Actual Rows']));
        const summary = scans
          .map((n) => `${n['Node Type']} on ${n['Index Name'] ?? n['Relation Name']}`)
          .join(', ');
        const seeks = scans.some((n) => /Index/.test(n['Node Type']) && seek.test(n['Index Cond'] ?? ''));
        if (!seeks || scans.some((n) => /Seq Scan/.test(n['Node Type']))) {
          throw new Error(`postgres ${name} for ${business} does not seek the index (${summary})`);
        }
        out.push(`${name}: ${summary}, ${read} rows read`);
      }
      return out;
    },
    async close() {
      await connected.catch(() => undefined);
      await client.end();
      await log.close();
    },
  };
}

function figure(samples: number[]): Figure {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), samples: sorted.length };
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Indexes of calls of each lookup kind, sampled over the whole log. */
function sampleCalls(shape: Shape, n: number, child: boolean, rand: () => number): number[] {
  const out: number[] = [];
  while (out.length < n) {
    const i = Math.floor(rand() * shape.calls);
    if ((callAt(shape, i).parent !== null) === child) out.push(i);
  }
  return out;
}

/**
 * Samples of one measure, taken one at a time so that series can be interleaved: the main log, the peer
 * log and OFFSET take turns, so a busy moment of the machine falls on all of them alike. The first tenth
 * of each series warms statement caches and connections and is left out.
 */
interface Series {
  probes: Array<() => Promise<number>>;
  keep: number;
}

async function runInterleaved(series: Series[]): Promise<Figure[]> {
  const samples = series.map(() => [] as number[]);
  const longest = Math.max(...series.map((s) => s.probes.length));
  for (let k = 0; k < longest; k++) {
    for (const [j, s] of series.entries()) {
      const probe = s.probes[k];
      if (probe) samples[j]!.push(await probe());
    }
  }
  return series.map((s, j) => figure(samples[j]!.slice(-s.keep)));
}

function lookupSeries(subject: Subject, shape: Shape, n: number, child: boolean): Series {
  const state = new RecordingState(subject.log);
  const resolver = new RecordingResolver({ callLog: subject.log, state, upstream: NO_UPSTREAM });
  const calls = sampleCalls(shape, n + Math.ceil(n / 10), child, seededRandom(child ? 2 : 1));
  const probes = calls.map((i) => () => {
    const c = callAt(shape, i);
    return time(async () => {
      const call = await subject.log.getForBusiness(c.businessId, c.callSid as CallSid);
      if (call === undefined) throw new Error(`bench call ${c.callSid} is missing`);
      const ref = await resolver.resolve(call);
      if (ref.ownerCallSid !== c.owner) throw new Error(`${c.callSid} resolved to ${ref.ownerCallSid}`);
    });
  });
  return { probes, keep: n };
}

interface Position {
  name: string;
  /** The row the cursor points at, for a business of `count` calls; `undefined`: the first page. */
  offset(count: number): number | undefined;
}

const POSITIONS: Position[] = [
  { name: 'first page', offset: () => undefined },
  { name: 'middle', offset: (n) => Math.floor(n / 2) },
  { name: '98% deep', offset: (n) => Math.max(0, Math.floor(n * 0.98) - PAGE) },
  // Every hundredth call has no start time and sorts last: this page reads them (the other cursor form).
  { name: 'last page (undated)', offset: (n) => Math.max(0, n - Math.ceil(PAGE / 2)) },
];

/** Businesses to page through: the largest, or typical ones (sampled among the others). */
function pickBusinesses(shape: Shape, largest: boolean, n: number, rand: () => number): number[] {
  if (largest || shape.businesses === 1) return Array.from({ length: n }, () => 0);
  return Array.from({ length: n }, () => 1 + Math.floor(rand() * (shape.businesses - 1)));
}

/** Pages of one position: by keyset (`CallLog.list`), or the same rows by OFFSET. */
function pageSeries(
  subject: Subject,
  shape: Shape,
  n: number,
  largest: boolean,
  position: Position,
  by: 'keyset' | 'offset',
): Series {
  const businesses = pickBusinesses(shape, largest, n + Math.ceil(n / 10), seededRandom(largest ? 7 : 8));
  const probes = businesses.map((b) => async () => {
    const business = `biz-${b}`;
    const at = position.offset(callsOf(shape, b));
    if (by === 'offset') {
      return time(async () => {
        const rows = await subject.offsetPage(business, at === undefined ? 0 : at + 1, PAGE);
        if (rows.length === 0) throw new Error(`empty OFFSET page for ${business} at ${position.name}`);
      });
    }
    // Finding the cursor is set-up, not timed.
    const cursor = at === undefined ? undefined : await subject.cursorAt(business, at);
    return time(async () => {
      const page = await subject.log.list(business, { limit: PAGE, cursor });
      if (page.calls.length === 0) throw new Error(`empty page for ${business} at ${position.name}`);
    });
  });
  return { probes, keep: n };
}

/** The peer log's shape: `peerCalls` calls with as many calls per business as the main log. */
export function peerShape(main: Shape, peerCalls: number): Shape {
  const calls = Math.min(peerCalls, main.calls);
  const businesses = Math.max(1, Math.round((main.businesses * calls) / main.calls));
  return { calls, businesses, bigShare: main.bigShare };
}

export async function runScaleBench(options: ScaleOptions): Promise<ScaleResult> {
  const log = options.log ?? (() => {});
  const main: Shape = { calls: options.calls, businesses: options.businesses, bigShare: options.bigShare };
  validateShape(main);
  const small = peerShape(main, options.peerCalls ?? 10_000);
  const lookups = options.lookups ?? 5000;
  const pages = options.pages ?? 300;
  const dataDir = options.dataDir ?? join(dirname(fileURLToPath(import.meta.url)), '.data');
  const prefix = options.schemaPrefix ?? 'recgate_scale';
  const progress = options.progress ?? false;
  const rows: ScaleRow[] = [];
  const plans: Record<string, string[]> = {};
  let generatedS = 0;

  for (const backend of options.backends) {
    const open = async (shape: Shape): Promise<Subject> => {
      const t = performance.now();
      let generated: boolean;
      let subject: Subject;
      if (backend === 'sqlite') {
        const made = await sqliteLog(shape, dataDir, progress);
        generated = made.generated;
        subject = openSqlite(made.path);
      } else {
        if (options.postgresUrl === undefined) throw new Error('postgresUrl is required for postgres');
        const made = await postgresLog(options.postgresUrl, shape, prefix, progress);
        generated = made.generated;
        subject = openPostgres(options.postgresUrl, made.schema);
      }
      if (generated) {
        const s = (performance.now() - t) / 1000;
        generatedS += s;
        log(`${backend}: generated ${fmtNum(shape.calls)} calls in ${s.toFixed(1)} s`);
      } else log(`${backend}: ${fmtNum(shape.calls)} calls from the cache`);
      return subject;
    };
    const big = await open(main);
    const peer = await open(small);
    try {
      const typical = main.businesses > 1 ? 1 : 0;
      plans[backend] = [];
      for (const b of [0, typical]) {
        const count = callsOf(main, b);
        for (const at of [0.5, 0.9]) {
          const lines = await big.checkPlans(`biz-${b}`, Math.floor(count * at), count - 3);
          plans[backend].push(...lines.map((l) => `biz-${b} (${count} calls), ${at * 100}% deep: ${l}`));
        }
      }
      for (const child of [false, true]) {
        const measure = child
          ? "download lookup: child leg (parent's recording)"
          : 'download lookup: own recording';
        log(`${backend}: ${measure}`);
        const [onMain, onPeer] = await runInterleaved([
          lookupSeries(big, main, lookups, child),
          lookupSeries(peer, small, lookups, child),
        ]);
        rows.push({ backend, measure, kind: 'lookup', main: onMain!, small: onPeer! });
      }
      for (const largest of [false, true]) {
        for (const position of POSITIONS) {
          const who = largest ? `largest business (${fmtNum(callsOf(main, 0))} calls)` : 'typical business';
          const measure = `calls page, ${who}: ${position.name}`;
          log(`${backend}: ${measure}`);
          const [onMain, onPeer, byOffset] = await runInterleaved([
            pageSeries(big, main, pages, largest, position, 'keyset'),
            pageSeries(peer, small, pages, largest, position, 'keyset'),
            pageSeries(big, main, pages, largest, position, 'offset'),
          ]);
          rows.push({ backend, measure, kind: 'page', main: onMain!, small: onPeer!, offset: byOffset! });
        }
      }
    } finally {
      await big.close();
      await peer.close();
    }
  }
  return { rows, generatedS, plans, shapes: { main, small } };
}

function validateShape(shape: Shape): void {
  if (!Number.isSafeInteger(shape.calls) || shape.calls < 1000)
    throw new Error('--calls must be an integer ≥ 1000');
  if (
    !Number.isSafeInteger(shape.businesses) ||
    shape.businesses < 1 ||
    shape.businesses > shape.calls / 100
  ) {
    throw new Error('--businesses must be an integer from 1 to calls/100 (at least 100 calls per business)');
  }
  if (!(shape.bigShare > 0 && shape.bigShare < 1)) throw new Error('--big-share must be between 0 and 1');
  if (shape.businesses > 1 && Math.floor(shape.calls * shape.bigShare) < 2 * PAGE) {
    throw new Error(`--big-share must give the largest business at least ${2 * PAGE} calls`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Report.

const ms = (v: number) => (v >= 10 ? v.toFixed(1) : v.toFixed(3));

export function renderScaleBench(result: ScaleResult): string {
  const { main, small } = result.shapes;
  const label = (s: Shape) => `${fmtNum(s.calls)} calls / ${fmtNum(s.businesses)} businesses`;
  const lines = [
    `| backend | measure | target p99 | ${label(main)}: p50 / p99 (ms) | ${label(small)}: p99 | same page by OFFSET: p99 | met |`,
    '|---|---|---:|---:|---:|---:|:---:|',
  ];
  for (const row of result.rows) {
    const target = row.kind === 'lookup' ? TARGETS.lookupP99Ms : TARGETS.pageP99Ms;
    lines.push(
      `| ${row.backend} | ${row.measure} | < ${target} ms | ${ms(row.main.p50)} / ${ms(row.main.p99)} | ` +
        `${ms(row.small.p99)} | ${row.offset ? ms(row.offset.p99) : '–'} | ${row.main.p99 < target ? 'yes' : 'NO'} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      calls: { type: 'string', default: '10000000' },
      businesses: { type: 'string', default: '10000' },
      'big-share': { type: 'string', default: '0.01' },
      'peer-calls': { type: 'string', default: '10000' },
      backends: { type: 'string', default: 'sqlite,postgres' },
      lookups: { type: 'string', default: '5000' },
      pages: { type: 'string', default: '300' },
      plans: { type: 'boolean', default: false },
    },
  });
  let backends = values.backends.split(',') as Backend[];
  if (backends.some((b) => b !== 'sqlite' && b !== 'postgres'))
    throw new Error('--backends: sqlite,postgres');
  let postgresUrl: string | undefined;
  if (backends.includes('postgres')) {
    const { findPostgres } = await import('../test/helpers/postgres.js');
    const found = await findPostgres();
    if ('url' in found) postgresUrl = found.url;
    else {
      console.error(`PostgreSQL left out: ${found.reason}`);
      backends = backends.filter((b) => b !== 'postgres');
    }
  }
  const result = await runScaleBench({
    calls: Number(values.calls),
    businesses: Number(values.businesses),
    bigShare: Number(values['big-share']),
    peerCalls: Number(values['peer-calls']),
    lookups: Number(values.lookups),
    pages: Number(values.pages),
    backends,
    postgresUrl,
    progress: process.stderr.isTTY,
    log: (line) => console.error(line),
  });
  console.log(renderScaleBench(result));
  if (values.plans) {
    for (const [backend, plans] of Object.entries(result.plans)) {
      console.log(`\n${backend} plans:\n${plans.map((p) => `- ${p}`).join('\n')}`);
    }
  }
  console.log(
    `\nnode ${process.version}; pages of ${PAGE}; every list and lookup query checked with EXPLAIN to read ` +
      `an index in order (--plans prints them). Generation (${result.generatedS.toFixed(0)} s in this run) ` +
      'is not timed; generated logs are kept in bench/.data and recgate_scale_* schemas. Main log, peer log ' +
      `and OFFSET take turns sample by sample. Load average at the end: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(', ')} on ${availableParallelism()} cores.`,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
