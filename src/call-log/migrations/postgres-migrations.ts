import type { Migration } from './migration.js';

/**
 * Statements are unqualified: they run with `search_path` set to the configured schema. The list index
 * spells out `NULLS LAST` so that it matches the list query's ORDER BY (PostgreSQL sorts NULLs first in
 * descending order by default). `parent_call_sid` is not a foreign key because a child leg may be
 * registered before (or without) its parent.
 *
 * Version 4 is the recording cache's index (`src/recordings/cache-index/`); see the SQLite list. The
 * trigger function is created in the schema the migration runs in (`search_path`), so schemas stay apart.
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
  {
    version: 4,
    name: 'create cached_files',
    sql: `
      CREATE TABLE cached_files (
        call_sid text COLLATE "C" PRIMARY KEY,
        size bigint NOT NULL CHECK (size >= 0),
        last_played_ms bigint NOT NULL,
        cached_at_ms bigint NOT NULL
      );
      CREATE INDEX cached_files_last_played_idx ON cached_files (last_played_ms, call_sid);
      CREATE TABLE cache_totals (
        id integer PRIMARY KEY CHECK (id = 1),
        files bigint NOT NULL,
        bytes bigint NOT NULL
      );
      INSERT INTO cache_totals (id, files, bytes) VALUES (1, 0, 0);
      CREATE FUNCTION cached_files_totals() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'INSERT' THEN
          UPDATE cache_totals SET files = files + 1, bytes = bytes + NEW.size WHERE id = 1;
        ELSIF TG_OP = 'DELETE' THEN
          UPDATE cache_totals SET files = files - 1, bytes = bytes - OLD.size WHERE id = 1;
        ELSIF NEW.size <> OLD.size THEN
          UPDATE cache_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 1;
        END IF;
        RETURN NULL;
      END $$;
      CREATE TRIGGER cached_files_totals AFTER INSERT OR DELETE OR UPDATE OF size ON cached_files
        FOR EACH ROW EXECUTE FUNCTION cached_files_totals();
    `,
  },
  {
    // See sqlite-migrations.ts: per-file hits for the top recordings, and the counters of the hit ratio.
    version: 5,
    name: 'count cache hits and downloads',
    sql: `
      ALTER TABLE cached_files ADD COLUMN hits bigint NOT NULL DEFAULT 0;
      CREATE INDEX cached_files_hits_idx ON cached_files (hits DESC, call_sid);
      CREATE TABLE cache_plays (
        id integer PRIMARY KEY CHECK (id = 1),
        hits bigint NOT NULL,
        downloads bigint NOT NULL
      );
      INSERT INTO cache_plays (id, hits, downloads) VALUES (1, 0, 0);
    `,
  },
  {
    // See sqlite-migrations.ts: the business → Twilio account mapping, own credentials sealed.
    version: 6,
    name: 'business twilio accounts',
    sql: `
      CREATE TABLE business_accounts (
        business_id text PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('subaccount', 'own')),
        account_sid text NOT NULL,
        credentials text,
        updated_at timestamptz NOT NULL,
        CHECK ((kind = 'own') = (credentials IS NOT NULL))
      );
      CREATE INDEX business_accounts_account_idx ON business_accounts (account_sid, business_id);
    `,
  },
];
