import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import { loadConfig } from '../../src/config/config.js';
import { parseDatabaseUrl } from '../../src/config/database-url.js';
import { recgateArgs } from '../helpers/recgate-command.js';

const SECRET = 'cli-test-secret-'.padEnd(40, 'z');

function run(args: string[], env: Record<string, string> = {}) {
  const clean = { ...process.env };
  delete clean.RECGATE_JWT_SECRET;
  return spawnSync(process.execPath, [...recgateArgs(), ...args], {
    env: { ...clean, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
}

describe('recgate CLI', () => {
  it('token prints a JWT for the business that the gateway accepts', async () => {
    const out = run(['token', '--business', 'acme', '--ttl', '15m'], { RECGATE_JWT_SECRET: SECRET });
    assert.equal(out.status, 0, out.stderr);
    const token = out.stdout.trim();
    assert.deepEqual(await new JwtAuth(SECRET).verify(token), { businessId: 'acme' });
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
    assert.ok(payload.exp - payload.iat === 900);
  });

  it('token refuses to run without a secret, or with a bad business or ttl', () => {
    const noSecret = run(['token', '--business', 'acme']);
    assert.equal(noSecret.status, 1);
    assert.match(noSecret.stderr, /RECGATE_JWT_SECRET is required/);
    const badBusiness = run(['token', '--business', '../x'], { RECGATE_JWT_SECRET: SECRET });
    assert.equal(badBusiness.status, 1);
    assert.match(badBusiness.stderr, /business must match/);
    const badTtl = run(['token', '--business', 'acme', '--ttl', 'forever'], { RECGATE_JWT_SECRET: SECRET });
    assert.equal(badTtl.status, 1);
    assert.match(badTtl.stderr, /ttl must look like/);
  });

  it('serve names the missing or bad setting and exits 1', () => {
    const noSecret = run(['serve', '--port', '0']);
    assert.equal(noSecret.status, 1);
    assert.match(noSecret.stderr, /RECGATE_JWT_SECRET is required/);
    const badPort = run(['serve', '--port', 'abc']);
    assert.notEqual(badPort.status, 0);
    assert.match(badPort.stderr, /--port must be a non-negative integer/);
    const badDb = run(['serve', '--database', 'mysql://x'], { RECGATE_JWT_SECRET: SECRET });
    assert.equal(badDb.status, 1);
    assert.match(badDb.stderr, /--database \(RECGATE_DATABASE_URL\) has an unsupported scheme "mysql:"/);
  });

  it('reads --database with one parser: what the call log accepts, the configuration accepts', () => {
    const input = { jwtSecret: SECRET, dataDir: '/data' };
    for (const url of ['POSTGRES://h/db', 'PostgreSQL://h/db', 'sqlite::memory:', 'file:x.db']) {
      assert.equal(loadConfig({ ...input, databaseUrl: url }, {}).databaseUrl, url);
      assert.doesNotThrow(() => parseDatabaseUrl(url, '/data'));
    }
    assert.equal(
      loadConfig({ ...input, databaseUrl: 'POSTGRES://h/db', lockBackend: 'postgres' }, {}).lockBackend,
      'postgres',
    );
    assert.throws(
      () => loadConfig({ ...input, databaseUrl: 'sqlite:x.db', lockBackend: 'postgres' }, {}),
      /lock-backend postgres/,
    );
    assert.throws(() => loadConfig({ ...input, databaseUrl: 'mysql://x' }, {}), /unsupported scheme/);
  });

  it('emulator serves Twilio REST shapes on the port it prints', async () => {
    const child = spawn(process.execPath, [...recgateArgs(), 'emulator', '--port', '0', '--demo'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
      });
      const deadline = Date.now() + 20_000;
      while (!/TWILIO_AUTH_TOKEN=\S+/.test(out) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const base = /TWILIO_API_BASE=(\S+)/.exec(out)?.[1];
      const sid = /TWILIO_ACCOUNT_SID=(\S+)/.exec(out)?.[1];
      const token = /TWILIO_AUTH_TOKEN=(\S+)/.exec(out)?.[1];
      assert.ok(base && sid && token, out);
      const res = await request(`${base}/2010-04-01/Accounts/${sid}/Recordings.json?PageSize=5`, {
        headers: { authorization: `Basic ${Buffer.from(`${sid}:${token}`).toString('base64')}` },
      });
      assert.equal(res.statusCode, 200);
      const page = (await res.body.json()) as { recordings: unknown[]; next_page_uri: string | null };
      assert.equal(page.recordings.length, 5);
      assert.match(String(page.next_page_uri), /^\/2010-04-01\/Accounts\/AC[0-9a-f]{32}\/Recordings\.json\?/);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });
});
