import type { Migration } from './migration.js';

/**
 * SQLite has no timestamp type: times are canonical UTC ISO 8601 text (`YYYY-MM-DDTHH:MM:SS.sssZ`), which
 * sorts by time under plain text comparison. `parent_call_sid` is not a foreign key because a child leg
 * may be registered before (or without) its parent.
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
];
