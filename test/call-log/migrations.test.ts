import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Migration } from '../../src/call-log/migrations/migration.js';
import { POSTGRES_MIGRATIONS } from '../../src/call-log/migrations/postgres-migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/call-log/migrations/sqlite-migrations.js';

function versions(list: readonly Migration[]): number[] {
  return list.map((m) => m.version);
}

test('migrations are numbered 1, 2, 3, … without gaps', () => {
  for (const list of [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS]) {
    assert.deepEqual(
      versions(list),
      list.map((_, i) => i + 1),
    );
    for (const m of list) assert.ok(m.name.length > 0 && m.sql.trim().length > 0);
  }
});

test('both dialects reach the same schema version with the same migration names', () => {
  assert.deepEqual(
    SQLITE_MIGRATIONS.map((m) => [m.version, m.name]),
    POSTGRES_MIGRATIONS.map((m) => [m.version, m.name]),
  );
});
