import type { Migration } from './migration.js';

/**
 * SQLite has no timestamp type: times are canonical UTC ISO 8601 text (`YYYY-MM-DDTHH:MM:SS.sssZ`), which
 * sorts by time under plain text comparison. `parent_call_sid` is not a foreign key because a child leg
 * may be registered before (or without) its parent.
 *
 * Version 4 is the recording cache's index (`src/recordings/cache-index/`): one row per finished file,
 * times in epoch milliseconds, an index on last play for least-recently-played eviction in O(log n), and
 * `cache_totals`, one row the triggers keep equal to the table's count and sum, so no start-up ever scans.
 * Version 5 counts plays for `recgate stats`: `cached_files.hits` (plays the finished file served, with an
 * index for the top recordings) and `cache_plays`, one row of hits and downloads started since, for the
 * hit ratio.
 */
export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'create calls',
    sql: `
      CREATE TABLE calls (
        call_sid TEXT PRIMARY KEY NOT NULL,
        business_id TEXT NOT NULL,
        parent_call_sid TEXT,
        recording_sid TEXT,
        recording_owner_call_sid TEXT,
        recording_state TEXT NOT NULL DEFAULT 'unknown'
          CHECK (recording_state IN ('unknown', 'available', 'processing', 'absent', 'deleted')),
        recording_size INTEGER CHECK (recording_size >= 0),
        recording_duration_s REAL CHECK (recording_duration_s >= 0),
        direction TEXT,
        from_number TEXT,
        to_number TEXT,
        started_at TEXT,
        duration_s REAL CHECK (duration_s >= 0),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX calls_business_order_idx
        ON calls (business_id, started_at DESC, created_at DESC, call_sid DESC);
      CREATE INDEX calls_recording_sid_idx ON calls (recording_sid);
    `,
  },
  {
    version: 2,
    name: 'purges and plays',
    sql: `
      ALTER TABLE calls ADD COLUMN purged_at TEXT;
      CREATE TABLE purged_recordings (
        recording_sid TEXT PRIMARY KEY NOT NULL,
        purged_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE plays (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        played_at TEXT NOT NULL,
        business_id TEXT NOT NULL,
        call_sid TEXT NOT NULL,
        recording_sid TEXT NOT NULL,
        bytes INTEGER NOT NULL CHECK (bytes >= 0),
        status INTEGER NOT NULL,
        request_id TEXT NOT NULL
      ) STRICT;
      CREATE INDEX plays_call_idx ON plays (call_sid, id DESC);
    `,
  },
  {
    version: 3,
    name: 'prefetch queue and recording status',
    sql: `
      ALTER TABLE calls ADD COLUMN recording_status TEXT;
      CREATE TABLE prefetch_jobs (
        recording_sid TEXT PRIMARY KEY NOT NULL,
        call_sid TEXT NOT NULL,
        business_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        run_after TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX prefetch_jobs_due_idx ON prefetch_jobs (state, run_after);
    `,
  },
  {
    version: 4,
    name: 'create cached_files',
    sql: `
      CREATE TABLE cached_files (
        call_sid TEXT PRIMARY KEY NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0),
        last_played_ms INTEGER NOT NULL,
        cached_at_ms INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX cached_files_last_played_idx ON cached_files (last_played_ms, call_sid);
      CREATE TABLE cache_totals (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL
      ) STRICT;
      INSERT INTO cache_totals (id, files, bytes) VALUES (1, 0, 0);
      CREATE TRIGGER cached_files_insert AFTER INSERT ON cached_files BEGIN
        UPDATE cache_totals SET files = files + 1, bytes = bytes + NEW.size WHERE id = 1;
      END;
      CREATE TRIGGER cached_files_delete AFTER DELETE ON cached_files BEGIN
        UPDATE cache_totals SET files = files - 1, bytes = bytes - OLD.size WHERE id = 1;
      END;
      CREATE TRIGGER cached_files_resize AFTER UPDATE OF size ON cached_files BEGIN
        UPDATE cache_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1;
      END;
    `,
  },
  {
    version: 5,
    name: 'count cache hits and downloads',
    sql: `
      ALTER TABLE cached_files ADD COLUMN hits INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX cached_files_hits_idx ON cached_files (hits DESC, call_sid);
      CREATE TABLE cache_plays (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hits INTEGER NOT NULL,
        downloads INTEGER NOT NULL
      ) STRICT;
      INSERT INTO cache_plays (id, hits, downloads) VALUES (1, 0, 0);
    `,
  },
  {
    // Which Twilio account serves each business (src/accounts/): no row is the main account; `subaccount`
    // uses the main credentials with the subaccount's SID in the path; `own` carries the business's own
    // credentials, sealed with AES-256-GCM (src/secrets/sealed.ts), never in clear.
    version: 6,
    name: 'business twilio accounts',
    sql: `
      CREATE TABLE business_accounts (
        business_id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('subaccount', 'own')),
        account_sid TEXT NOT NULL,
        credentials TEXT,
        updated_at TEXT NOT NULL,
        CHECK ((kind = 'own') = (credentials IS NOT NULL))
      ) STRICT;
      CREATE INDEX business_accounts_account_idx ON business_accounts (account_sid, business_id);
    `,
  },
];
