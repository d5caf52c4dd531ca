import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { openCallLog, parseDatabaseUrl } from '../../src/call-log/index.js';
import { PostgresCallLog } from '../../src/call-log/postgres.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { isRecgateError } from '../../src/errors.js';
import { findPostgres, postgresUnavailable } from '../helpers/postgres.js';
import { mountReadOnly } from '../helpers/read-only-mount.js';
import { newCallSid } from './contract.js';

const root = await mkdtemp(join(tmpdir(), 'recgate-open-'));
after(() => rm(root, { recursive: true, force: true }));

describe('parseDatabaseUrl', () => {
  test('no URL means the SQLite file in the data dir', () => {
    assert.deepEqual(parseDatabaseUrl(undefined, '/data'), { kind: 'sqlite', path: '/data/recgate.db' });
    assert.deepEqual(parseDatabaseUrl('  ', 'data'), { kind: 'sqlite', path: resolve('data/recgate.db') });
  });

  test('postgres:// and postgresql:// select PostgreSQL; ?schema= names the schema', () => {
    assert.deepEqual(parseDatabaseUrl('postgres://u:p@h:5432/db', '/d'), {
      kind: 'postgres',
      connectionString: 'postgres://u:p@h:5432/db',
    });
    assert.deepEqual(parseDatabaseUrl('postgresql://h/db?sslmode=disable', '/d'), {
      kind: 'postgres',
      connectionString: 'postgresql://h/db?sslmode=disable',
    });
    assert.deepEqual(parseDatabaseUrl('postgres://h/db?schema=recgate', '/d'), {
      kind: 'postgres',
      connectionString: 'postgres://h/db',
      schema: 'recgate',
    });
    assert.deepEqual(parseDatabaseUrl('postgres://h/db?a=1&schema=rg&b=2', '/d'), {
      kind: 'postgres',
      connectionString: 'postgres://h/db?a=1&b=2',
      schema: 'rg',
    });
  });

  test('sqlite: and file: select SQLite', () => {
    assert.deepEqual(parseDatabaseUrl('sqlite:/var/x.db', '/d'), { kind: 'sqlite', path: '/var/x.db' });
    assert.deepEqual(parseDatabaseUrl('sqlite:///var/x.db', '/d'), { kind: 'sqlite', path: '/var/x.db' });
    assert.deepEqual(parseDatabaseUrl('sqlite:rel/x.db', '/d'), {
      kind: 'sqlite',
      path: resolve('rel/x.db'),
    });
    assert.deepEqual(parseDatabaseUrl('sqlite::memory:', '/d'), { kind: 'sqlite', path: ':memory:' });
    assert.deepEqual(parseDatabaseUrl('file:///var/x.db', '/d'), { kind: 'sqlite', path: '/var/x.db' });
    assert.deepEqual(parseDatabaseUrl('file:rel.db', '/d'), { kind: 'sqlite', path: resolve('rel.db') });
  });

  test('anything else is rejected naming --database, without echoing the URL', () => {
    for (const url of ['mysql://root:hunter2@h/db', 'hunter2', 'sqlite:', 'file:', 'http://x']) {
      assert.throws(
        () => parseDatabaseUrl(url, '/d'),
        (err: unknown) => {
          assert.ok(isRecgateError(err));
          assert.equal(err.code, 'RECGATE_INVALID_REQUEST');
          assert.match(err.message, /--database/);
          assert.doesNotMatch(err.message, /hunter2/);
          return true;
        },
      );
    }
  });
});

describe('openCallLog', () => {
  test('defaults to a migrated SQLite file in the data dir, creating the dir', async () => {
    const dataDir = join(root, 'new', 'data');
    const log = await openCallLog(undefined, dataDir);
    try {
      assert.ok(log instanceof SqliteCallLog);
      assert.ok((await stat(join(dataDir, 'recgate.db'))).isFile());
      const callSid = newCallSid();
      await log.upsert({ businessId: 'b', callSid });
      assert.equal((await log.get(callSid))?.businessId, 'b');
    } finally {
      await log.close();
    }
  });

  test('opens a file: URL', async () => {
    const path = join(root, 'via-url', 'calls.db');
    const log = await openCallLog(pathToFileURL(path).href, root);
    try {
      assert.equal(await log.ping(), true);
      assert.ok((await stat(path)).isFile());
    } finally {
      await log.close();
    }
  });

  test('rejects an unsupported URL', async () => {
    await assert.rejects(openCallLog('redis://x', root), /--database/);
  });

  /** Asserts RECGATE_DATABASE_ERROR with exactly this message. */
  const openFails = (message: string) => (err: unknown) => {
    assert.ok(isRecgateError(err), String(err));
    assert.equal(err.code, 'RECGATE_DATABASE_ERROR');
    assert.equal(err.message, message);
    return true;
  };

  test('a read-only data dir: the error names the file and the cause', async (t) => {
    const dataDir = join(root, 'read-only');
    if (!mountReadOnly(t, dataDir)) return;
    await assert.rejects(
      openCallLog(undefined, dataDir),
      openFails(`cannot open the call log ${dataDir}/recgate.db: EROFS: read-only file system`),
    );
    // A data dir still to be created below the read-only one: Node's mkdir says ENOENT, the volume is why.
    await assert.rejects(
      openCallLog(undefined, join(dataDir, 'a', 'b')),
      openFails(`cannot open the call log ${dataDir}/a/b/recgate.db: EROFS: read-only file system`),
    );
  });

  test('a directory in place of the SQLite file: the error says so', async () => {
    const dataDir = join(root, 'dir-in-place');
    await mkdir(join(dataDir, 'recgate.db'), { recursive: true });
    await assert.rejects(
      openCallLog(undefined, dataDir),
      openFails(`cannot open the call log ${dataDir}/recgate.db: it is a directory`),
    );
  });

  test('unreachable PostgreSQL: the error names user, host and database, never the password', async () => {
    // Port 1 on loopback refuses at once; no server is needed.
    const url = 'postgres://recgate:hunter2@127.0.0.1:1/calls?password=hunter3&schema=rg';
    await assert.rejects(
      openCallLog(url, root),
      openFails(
        'cannot open the call log postgres://recgate@127.0.0.1:1/calls (schema rg): connect ECONNREFUSED 127.0.0.1:1',
      ),
    );
  });

  test('opens PostgreSQL in the schema named by the URL', async (t) => {
    const found = await findPostgres();
    if ('reason' in found) {
      postgresUnavailable(t, found.reason);
      return;
    }
    const base = found.url;
    const probe = new pg.Client({ connectionString: base });
    await probe.connect();
    const schema = `recgate_test_${process.pid}_${randomBytes(4).toString('hex')}`;
    t.after(async () => {
      await probe.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await probe.end();
    });
    const url = new URL(base);
    url.searchParams.set('schema', schema);
    const log = await openCallLog(url.href, root);
    try {
      assert.ok(log instanceof PostgresCallLog);
      const callSid = newCallSid();
      await log.upsert({ businessId: 'b', callSid });
      const rows = await probe.query(`SELECT business_id FROM ${schema}.calls WHERE call_sid = $1`, [
        callSid,
      ]);
      assert.equal(rows.rows[0]?.business_id, 'b');
    } finally {
      await log.close();
    }
  });
});
