import type { Migration } from './migration.js';

/**
 * Statements are unqualified: they run with `search_path` set to the configured schema. The list index
 * spells out `NULLS LAST` so that it matches the list query's ORDER BY (PostgreSQL sorts NULLs first in
 * descending order by default). `parent_call_sid` is not a foreign key because a child leg may be
 * registered before (or without) its parent.
 */
export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'create calls',
    sql: `
      CREATE TABLE calls (
        call_sid text COLLATE "C" PRIMARY KEY,
        business_id text NOT NULL,
        parent_call_sid text,
        recording_sid text,
        recording_owner_call_sid text,
        recording_state text NOT NULL DEFAULT 'unknown'
          CHECK (recording_state IN ('unknown', 'available', 'processing', 'absent', 'deleted')),
        recording_size bigint CHECK (recording_size >= 0),
        recording_duration_s double precision CHECK (recording_duration_s >= 0),
        direction text,
        from_number text,
        to_number text,
        started_at timestamptz,
        duration_s double precision CHECK (duration_s >= 0),
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      );
      CREATE INDEX calls_business_order_idx
        ON calls (business_id, started_at DESC NULLS LAST, created_at DESC, call_sid DESC);
      CREATE INDEX calls_recording_sid_idx ON calls (recording_sid);
    `,
  },
  {
    version: 2,
    name: 'purges and plays',
    sql: `
      ALTER TABLE calls ADD COLUMN purged_at timestamptz;
      CREATE TABLE purged_recordings (
        recording_sid text COLLATE "C" PRIMARY KEY,
        purged_at timestamptz NOT NULL
      );
      CREATE TABLE plays (
        id bigserial PRIMARY KEY,
        played_at timestamptz NOT NULL,
        business_id text NOT NULL,
        call_sid text COLLATE "C" NOT NULL,
        recording_sid text NOT NULL,
        bytes bigint NOT NULL CHECK (bytes >= 0),
        status integer NOT NULL,
        request_id text NOT NULL
      );
      CREATE INDEX plays_call_idx ON plays (call_sid, id DESC);
    `,
  },
  {
    version: 3,
    name: 'prefetch queue and recording status',
    sql: `
      ALTER TABLE calls ADD COLUMN recording_status text;
      CREATE TABLE prefetch_jobs (
        recording_sid text COLLATE "C" PRIMARY KEY,
        call_sid text NOT NULL,
        business_id text NOT NULL,
        state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        run_after timestamptz NOT NULL,
        last_error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      );
      CREATE INDEX prefetch_jobs_due_idx ON prefetch_jobs (state, run_after);
    `,
  },
];
