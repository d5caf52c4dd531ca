/**
 * `npm run bench:cache [-- --sizes 10000,100000,1000000] [--backends sqlite,postgres]`: the bounded-disk
 * cache index at scale. For each backend and size it fills an index with that many cached recordings (rows,
 * plus a few real files, the least recently played), then measures:
 * - start-up: opening the index and starting the evictor on it (reads the totals; no scan);
 * - one eviction pass that removes one file (median of several), and the cost per eviction inside a pass
 *   that removes many: take the recording's lock, re-read its row, remove the file and the row;
 * - the least-recently-played query itself (`oldest(16)`), median.
 * Figures print side by side per size, so O(log n) growth shows as nearly flat columns. PostgreSQL is the
 * test server (RECGATE_TEST_POSTGRES_URL or 127.0.0.1:5432/test); it is left out, saying why, when absent.
 *
 * On SQLite it also starts `recgate serve` (one worker; the build, or with `--source` the sources) on that
 * data dir, with as many finished recordings on disk as rows in the index, and times it from spawn to
 * `/readyz` answering 200, beside the same start on an empty data dir in the same run.
 *
 * A second table does the same for the recordings directory itself (`--dir-sizes`): a directory holding that
 * many finished recordings (empty files, with their identity records), and the cost of removing one
 * recording as an eviction does (no listing: flat), as a purge does (it looks for crashed generations of the
 * recording: one scan), and of the sweep's scan for leftovers (hourly and at start, in the background).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { pino } from 'pino';
import { PostgresCallLog } from '../src/call-log/postgres.js';
import { SqliteCallLog } from '../src/call-log/sqlite.js';
import type { CacheIndex } from '../src/recordings/cache-index/cache-index.js';
import { PostgresCacheIndex } from '../src/recordings/cache-index/postgres.js';
import { SqliteCacheIndex } from '../src/recordings/cache-index/sqlite.js';
import { Evictor } from '../src/recordings/eviction.js';
import { FsLocker } from '../src/recordings/lock/fs.js';
import type { Locker } from '../src/recordings/lock/lock.js';
import { PostgresLocker } from '../src/recordings/lock/postgres.js';
import { FsRecordingStore } from '../src/recordings/store/fs.js';

export type Backend = 'sqlite' | 'postgres';

export interface CacheBenchRow {
  backend: Backend;
  rows: number;
  fillS: number;
  startupMs: number;
  /** A whole pass that evicts one file (eviction lock, totals, one step), median. */
  passMs: number;
  /** Per eviction inside a pass of {@link MANY} evictions. */
  stepMs: number;
  /** `oldest(16)`, median. */
  oldestMs: number;
  /** Real files the pass removed (the rest of the rows have no file: the bench fills rows, not disks). */
  realFilesRemoved: number;
  /** SQLite: `recgate serve` from spawn to ready on this data dir, with `rows` recordings on disk too. */
  serveMs?: number;
  /** SQLite: the same on an empty data dir, in the same run. */
  serveEmptyMs?: number;
}

/** Row size in the filled index, bytes. */
const ROW_BYTES = 1000;
/** Real files among the least recently played rows. */
const REAL_FILES = 5;
/** Evictions in the pass whose per-eviction cost is measured. */
const MANY = 500;
const SINGLE_PASSES = 15;

interface Subject {
  index: CacheIndex;
  locker: Locker;
  /** Opens another index on the same database, as a restarted process would. */
  reopen(): CacheIndex;
  close(): Promise<void>;
}

export async function runCacheBench(options: {
  sizes: number[];
  backends: Backend[];
  postgresUrl?: string | undefined;
  /** Also time `recgate serve`'s start on the SQLite data dirs, started this way. @default not timed */
  serve?: ServeEntry | undefined;
  log?: (line: string) => void;
}): Promise<CacheBenchRow[]> {
  const log = options.log ?? (() => {});
  const rows: CacheBenchRow[] = [];
  for (const backend of options.backends) {
    for (const size of options.sizes) {
      const dir = mkdtempSync(join(tmpdir(), 'recgate-bench-cache-'));
      try {
        log(`${backend}: filling ${size} rows`);
        const started = performance.now();
        const subject =
          backend === 'sqlite'
            ? await sqliteSubject(dir, size)
            : await postgresSubject(options.postgresUrl!, dir, size);
        const fillS = (performance.now() - started) / 1000;
        let row: CacheBenchRow;
        try {
          row = { backend, rows: size, fillS, ...(await measure(subject, dir)) };
        } finally {
          await subject.close();
        }
        if (backend === 'sqlite' && options.serve !== undefined) {
          log(`sqlite: writing ${size} recordings, then starting recgate serve`);
          fillDirectory(join(dir, 'recordings'), size);
          row.serveMs = await timeServeStart(dir, options.serve);
          const empty = mkdtempSync(join(tmpdir(), 'recgate-bench-empty-'));
          try {
            row.serveEmptyMs = await timeServeStart(empty, options.serve);
          } finally {
            rmSync(empty, { recursive: true, force: true });
          }
        }
        rows.push(row);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  return rows;
}

async function measure(
  subject: Subject,
  dir: string,
): Promise<Omit<CacheBenchRow, 'backend' | 'rows' | 'fillS'>> {
  const recordings = join(dir, 'recordings');
  const store = new FsRecordingStore({ dir: recordings });
  const logger = pino({ level: 'silent' });
  let realFilesRemoved = 0;
  const evictorOn = (index: CacheIndex, maxBytes: number) =>
    new Evictor({
      index,
      store,
      locker: subject.locker,
      logger,
      limits: { maxBytes: { bytes: maxBytes } },
      onEvicted: () => realFilesRemoved++,
    });

  // Start-up: a fresh connection to the filled index, and the evictor reading its totals.
  const t0 = performance.now();
  const reopened = subject.reopen();
  const startup = evictorOn(reopened, Number.MAX_SAFE_INTEGER);
  const totals = await startup.start();
  const startupMs = performance.now() - t0;
  await startup.close();
  await reopened.close();

  const oldest: number[] = [];
  for (let i = 0; i < 30; i++) {
    const t = performance.now();
    await subject.index.oldest(16);
    oldest.push(performance.now() - t);
  }

  let bytes = totals.bytes;
  const passes: number[] = [];
  for (let i = 0; i < SINGLE_PASSES; i++) {
    bytes -= ROW_BYTES;
    const evictor = evictorOn(subject.index, bytes);
    const t = performance.now();
    const result = await evictor.evict();
    passes.push(performance.now() - t);
    await evictor.close();
    if (result.skipped !== 0) throw new Error('a bench eviction was skipped');
  }

  bytes -= MANY * ROW_BYTES;
  const many = evictorOn(subject.index, bytes);
  const t = performance.now();
  await many.evict();
  const stepMs = (performance.now() - t) / MANY;
  await many.close();
  const after = await subject.index.totals();
  if (after.bytes > bytes) throw new Error(`the pass left ${after.bytes} bytes, over ${bytes}`);
  return {
    startupMs,
    passMs: median(passes),
    stepMs,
    oldestMs: median(oldest),
    realFilesRemoved,
  };
}

export interface DirBenchRow {
  files: number;
  fillS: number;
  /** `store.remove(id)`, as the evictor calls it: median. */
  evictMs: number;
  /** `store.remove(id, { everyGeneration: true })`, as a purge calls it: median. */
  purgeMs: number;
  /** `store.leftovers()` over the whole directory, as the sweep calls it. */
  sweepMs: number;
}

const DIR_REMOVALS = 15;

/** Fills a recordings directory with `files` finished recordings and times the store's removals and sweep. */
export async function runDirectoryBench(sizes: number[], log: (line: string) => void = () => {}) {
  const rows: DirBenchRow[] = [];
  for (const files of sizes) {
    const dir = mkdtempSync(join(tmpdir(), 'recgate-bench-dir-'));
    try {
      log(`directory: writing ${files} recordings`);
      const started = performance.now();
      fillDirectory(dir, files);
      const fillS = (performance.now() - started) / 1000;
      const store = new FsRecordingStore({ dir });
      const timed = async (fn: () => Promise<unknown>) => {
        const t = performance.now();
        await fn();
        return performance.now() - t;
      };
      const evictions: number[] = [];
      const purges: number[] = [];
      for (let i = 0; i < DIR_REMOVALS; i++) {
        evictions.push(await timed(() => store.remove(sid(2 * i))));
        purges.push(await timed(() => store.remove(sid(2 * i + 1), { everyGeneration: true })));
      }
      let leftovers = -1;
      const sweepMs = await timed(async () => {
        leftovers = (await store.leftovers()).length;
      });
      if (leftovers !== 0) throw new Error(`the bench directory has ${leftovers} leftovers`);
      rows.push({ files, fillS, evictMs: median(evictions), purgeMs: median(purges), sweepMs });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}

/** The directory figures as a table, one column per size. */
export function renderDirectoryBench(rows: DirBenchRow[]): string {
  const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : `${n}`);
  const measures: Array<[string, (r: DirBenchRow) => string]> = [
    ['fill (s)', (r) => r.fillS.toFixed(1)],
    ['remove one, as an eviction (ms, median)', (r) => r.evictMs.toFixed(3)],
    ['remove one, as a purge (ms, median)', (r) => r.purgeMs.toFixed(1)],
    ['sweep scan for leftovers (ms)', (r) => r.sweepMs.toFixed(0)],
  ];
  return [
    `| recordings in the directory | ${rows.map((r) => label(r.files)).join(' | ')} |`,
    `|---|${rows.map(() => '---:').join('|')}|`,
    ...measures.map(([name, fmt]) => `| ${name} | ${rows.map(fmt).join(' | ')} |`),
  ].join('\n');
}

/** Writes `files` finished recordings (empty, each with its identity record) into `dir`, past those there. */
function fillDirectory(dir: string, files: number): void {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < files; i++) {
    const name = `${sid(i)}.mp3`;
    if (i < REAL_FILES && existsSync(join(dir, name))) continue;
    writeFileSync(join(dir, name), '');
    writeFileSync(join(dir, `.${name}.id`), '');
  }
}

/** How the bench starts `recgate serve`: the build (`bin/recgate.js`), or the sources through tsx. */
export type ServeEntry = 'dist' | 'source';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * `recgate serve` (one worker) on `dataDir`: ms from spawn to `/readyz` answering 200 (polled every 10 ms).
 * Twilio is never asked: a start reads no recording.
 */
async function timeServeStart(dataDir: string, entry: ServeEntry): Promise<number> {
  const { freePort } = await import('../test/helpers/common.js');
  const port = await freePort();
  const args =
    entry === 'dist'
      ? [join(ROOT, 'bin/recgate.js')]
      : ['--import', 'tsx', join(ROOT, 'test/helpers/cli-entry.ts')];
  const started = performance.now();
  const child = spawn(
    process.execPath,
    [
      ...args,
      'serve',
      '--port',
      String(port),
      '--data-dir',
      dataDir,
      '--twilio-api-base',
      'http://127.0.0.1:9',
    ],
    {
      env: {
        ...process.env,
        RECGATE_JWT_SECRET: randomBytes(32).toString('hex'),
        TWILIO_ACCOUNT_SID: `AC${'0'.repeat(32)}`,
        TWILIO_AUTH_TOKEN: 'unused',
        RECGATE_LOG_LEVEL: 'warn',
        RECGATE_DRAIN_DELAY: '0',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`recgate serve exited (${child.exitCode}): ${stderr}`);
      if (performance.now() - started > 120_000) throw new Error(`recgate serve did not come up: ${stderr}`);
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (res) => res.status === 200,
        () => false,
      );
      if (ready) return performance.now() - started;
      await sleep(10);
    }
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  }
}

/** Call SIDs for the bench: row `i` is played at `BASE + i` ms, so row 0 is the least recently played. */
const BASE = Date.parse('2026-01-01T00:00:00Z');
const sid = (i: number) => `CA${i.toString(16).padStart(32, '0')}`;

function writeRealFiles(dir: string): void {
  const recordings = join(dir, 'recordings');
  mkdirSync(recordings, { recursive: true });
  for (let i = 0; i < REAL_FILES; i++)
    writeFileSync(join(recordings, `${sid(i)}.mp3`), randomBytes(ROW_BYTES));
}

async function sqliteSubject(dir: string, size: number): Promise<Subject> {
  const path = join(dir, 'recgate.db');
  const log = new SqliteCallLog(path);
  await log.migrate();
  await log.close();
  const db = new Database(path);
  const insert = db.prepare(
    'INSERT INTO cached_files (call_sid, size, last_played_ms, cached_at_ms) VALUES (?, ?, ?, ?)',
  );
  db.transaction(() => {
    for (let i = 0; i < size; i++) insert.run(sid(i), ROW_BYTES, BASE + i, BASE + i);
  })();
  db.close();
  writeRealFiles(dir);
  const locker = new FsLocker({ dir: join(dir, 'recordings') });
  const index = new SqliteCacheIndex(path);
  return {
    index,
    locker,
    reopen: () => new SqliteCacheIndex(path),
    close: () => index.close(),
  };
}

async function postgresSubject(url: string, dir: string, size: number): Promise<Subject> {
  const schema = `recgate_bench_cache_${process.pid}_${randomBytes(3).toString('hex')}`;
  const log = new PostgresCallLog({ connectionString: url, schema, poolSize: 1 });
  await log.migrate();
  await log.close();
  const admin = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
  await admin.connect();
  // Filled in one statement with the totals trigger off (the row-by-row trigger is for live traffic),
  // then the totals set once.
  await admin.query('ALTER TABLE cached_files DISABLE TRIGGER cached_files_totals');
  await admin.query(
    `INSERT INTO cached_files (call_sid, size, last_played_ms, cached_at_ms)
     SELECT 'CA' || lpad(to_hex(i), 32, '0'), $1, $2::bigint + i, $2::bigint + i
     FROM generate_series(0, $3::int - 1) AS i`,
    [ROW_BYTES, BASE, size],
  );
  await admin.query('ALTER TABLE cached_files ENABLE TRIGGER cached_files_totals');
  await admin.query('UPDATE cache_totals SET files = $1, bytes = $1::bigint * $2', [size, ROW_BYTES]);
  await admin.query('VACUUM ANALYZE cached_files');
  writeRealFiles(dir);
  const locker = new PostgresLocker({ connectionString: url, schema });
  const index = new PostgresCacheIndex({ connectionString: url, schema });
  return {
    index,
    locker,
    reopen: () => new PostgresCacheIndex({ connectionString: url, schema }),
    async close() {
      await index.close();
      await locker.close();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    },
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** The figures as a table, one column per size. */
export function renderCacheBench(rows: CacheBenchRow[]): string {
  const sizes = [...new Set(rows.map((r) => r.rows))];
  const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : `${n}`);
  const lines = [
    `| backend | measure | ${sizes.map(label).join(' | ')} |`,
    `|---|---|${sizes.map(() => '---:').join('|')}|`,
  ];
  const measures: Array<[string, (r: CacheBenchRow) => string]> = [
    ['fill (s)', (r) => r.fillS.toFixed(1)],
    ['start-up (ms)', (r) => r.startupMs.toFixed(1)],
    ['pass evicting 1 file (ms, median)', (r) => r.passMs.toFixed(2)],
    [`per eviction in a ${MANY}-file pass (ms)`, (r) => r.stepMs.toFixed(3)],
    ['oldest(16) query (ms, median)', (r) => r.oldestMs.toFixed(3)],
    ['recgate serve start to ready, this data dir (ms)', (r) => r.serveMs?.toFixed(0) ?? '–'],
    ['recgate serve start to ready, empty data dir (ms)', (r) => r.serveEmptyMs?.toFixed(0) ?? '–'],
  ];
  for (const backend of [...new Set(rows.map((r) => r.backend))]) {
    for (const [name, fmt] of measures) {
      if (rows.every((r) => r.backend !== backend || fmt(r) === '–')) continue;
      const cells = sizes.map((n) => {
        const row = rows.find((r) => r.backend === backend && r.rows === n);
        return row ? fmt(row) : '–';
      });
      lines.push(`| ${backend} | ${name} | ${cells.join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

async function findPostgresUrl(): Promise<{ url: string } | { reason: string }> {
  const { findPostgres } = await import('../test/helpers/postgres.js');
  return findPostgres();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '10000,100000,1000000' },
      backends: { type: 'string', default: 'sqlite,postgres' },
      'dir-sizes': { type: 'string' },
      /** Start `recgate serve` from the sources (tsx) rather than the build. */
      source: { type: 'boolean', default: false },
    },
  });
  if (!values.source) (await import('./run.js')).ensureBuild((l) => console.error(l));
  const sizes = values.sizes.split(',').map((s) => Number(s));
  if (sizes.some((n) => !Number.isSafeInteger(n) || n < MANY + SINGLE_PASSES + REAL_FILES)) {
    throw new Error(`--sizes must be integers of at least ${MANY + SINGLE_PASSES + REAL_FILES}`);
  }
  let backends = values.backends.split(',') as Backend[];
  let postgresUrl: string | undefined;
  if (backends.includes('postgres')) {
    const found = await findPostgresUrl();
    if ('url' in found) postgresUrl = found.url;
    else {
      console.error(`PostgreSQL left out: ${found.reason}`);
      backends = backends.filter((b) => b !== 'postgres');
    }
  }
  const rows = await runCacheBench({
    sizes,
    backends,
    postgresUrl,
    serve: values.source ? 'source' : 'dist',
    log: (l) => console.error(l),
  });
  console.log(renderCacheBench(rows));
  console.log(
    `\nnode ${process.version}; ${REAL_FILES} real files per run; row size ${ROW_BYTES} bytes; ` +
      `recgate serve from ${values.source ? 'the sources (tsx)' : 'the build (bin/recgate.js)'}, one worker.`,
  );
  const dirSizes = (values['dir-sizes'] ?? values.sizes).split(',').map((s) => Number(s));
  if (dirSizes.some((n) => !Number.isSafeInteger(n) || n < 2 * DIR_REMOVALS)) {
    throw new Error(`--dir-sizes must be integers of at least ${2 * DIR_REMOVALS}`);
  }
  const dirRows = await runDirectoryBench(dirSizes, (l) => console.error(l));
  console.log(`\n${renderDirectoryBench(dirRows)}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
