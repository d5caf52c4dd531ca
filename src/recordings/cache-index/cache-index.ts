/**
 * The cache index: which finished recordings are on disk, how big, and when each was last played, kept in
 * the call log's database (table `cached_files`, migration 4) so that bounded-disk eviction never scans the
 * recordings directory. One interface here, one file per backend beside it (`sqlite.ts`, `postgres.ts`);
 * `test/recordings/cache-index-contract.ts` is the suite both pass.
 *
 * Rows are keyed by the owner call SID (the file is `{callSid}.mp3`). Times are epoch milliseconds. Every
 * method is one indexed statement (or one transaction of them): O(log n) in the number of rows, except
 * {@link CacheIndex.backfill}, which is O(k log n) in the rows it is given. Several processes and hosts may
 * share one index; each method is atomic on its own.
 *
 * Methods reject with RecgateError RECGATE_DATABASE_ERROR when the database fails.
 */

/** One finished recording on disk. */
export interface CachedFile {
  /** The owner call SID, naming the file `{callSid}.mp3`. */
  callSid: string;
  /** Bytes on disk. */
  size: number;
  /** When the recording was last played (a hit or a download), epoch ms. */
  lastPlayedMs: number;
  /** When the file was committed, epoch ms. */
  cachedAtMs: number;
}

/** Where a walk in least-recently-played order resumes: after this row. */
export interface OldestCursor {
  lastPlayedMs: number;
  callSid: string;
}

export interface CacheTotals {
  files: number;
  bytes: number;
}

/** What the hit ratio is made of (migration 5 on): plays a finished local file served, and downloads started. */
export interface PlayCounts {
  hits: number;
  downloads: number;
}

/** A row with its hits: plays the finished file served since the row was made. */
export interface TopFile extends CachedFile {
  hits: number;
}

export interface CacheIndex {
  /**
   * Records a committed file: inserts the row, or replaces size and times when the call's file was
   * replaced by a new download. `atMs` is both the cache time and the last play.
   */
  record(callSid: string, size: number, atMs: number): Promise<void>;

  /**
   * Inserts rows for files found on disk that have none (an upgrade from a version without the index);
   * rows already present are left as they are, so a concurrent {@link record} wins. Resolves to the count
   * inserted.
   */
  backfill(files: readonly CachedFile[]): Promise<number>;

  /**
   * Moves each listed row's last play forward to the given time (never back), in one transaction. Calls
   * without a row are ignored. Callers batch plays, so a hot recording costs one write per batch.
   */
  touch(plays: ReadonlyMap<string, number>): Promise<void>;

  /** The row of `callSid`, or `undefined`. */
  get(callSid: string): Promise<CachedFile | undefined>;

  /**
   * Up to `limit` rows in least-recently-played order (ties by call SID), after `after` when given. Served
   * by the index on `(last_played_ms, call_sid)`: O(log n + limit).
   */
  oldest(limit: number, after?: OldestCursor): Promise<CachedFile[]>;

  /**
   * Deletes the row of `callSid` if its last play is still `lastPlayedMs` (nobody played it since the
   * evictor looked): `true` when a row was deleted. Without `lastPlayedMs`, deletes whatever row there is.
   */
  remove(callSid: string, lastPlayedMs?: number): Promise<boolean>;

  /**
   * Adds to the play counters, in one transaction: `hits` per call SID (plays a finished file served; a
   * call without a row counts in the totals only) and `downloads` started. Callers batch, as for
   * {@link touch}.
   */
  countPlays(hits: ReadonlyMap<string, number>, downloads: number): Promise<void>;

  /** The play counters' totals: O(1). */
  playCounts(): Promise<PlayCounts>;

  /** Up to `limit` rows with the most hits (ties by call SID), served by the index on hits: O(log n + limit). */
  top(limit: number): Promise<TopFile[]>;

  /** Files and bytes in the index, from the totals row the database keeps in step: O(1). */
  totals(): Promise<CacheTotals>;

  /** Releases the connection(s); idempotent. */
  close(): Promise<void>;
}
