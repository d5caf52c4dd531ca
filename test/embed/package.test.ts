/**
 * The package as a user gets it (issue 15, item 1): a `tsc` build packed by `npm pack`, installed into a
 * temporary project, imported by name, type-checked from a user's TypeScript file, and the README's Express
 * and Fastify apps (examples/, included verbatim in the README) run from it against the emulator.
 *
 * The install unpacks the tarball into the project's `node_modules/recgate`, as npm does, and links the
 * dependencies from this repository's `node_modules` (what `npm ci` fetched): no network, and no native
 * rebuild of better-sqlite3.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Emulator } from '../../src/emulator/index.js';
import { createRecgate } from '../../src/index.js';
import { sha256, tempDir } from '../helpers/common.js';
import { JWT_SECRET } from '../helpers/stack.js';
import { emulatorFor, get, recordedCall } from './helpers.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** A user's TypeScript: every export used with its types, and misuses the types must refuse. */
const USER_TS = `
import express from 'express';
import Fastify from 'fastify';
import { type AuthenticateHook, createRecgate, fastifyRecgate, type Recgate, type RecgateOptions } from 'recgate';

type SessionRequest = express.Request & { session?: { businessId: string } };
const hook: AuthenticateHook<SessionRequest> = (req) => req.session?.businessId ?? null;
const options: RecgateOptions<SessionRequest> = { prefix: '/recordings', authenticate: hook, cache: { maxBytes: '10GiB' } };
const recgate: Recgate<SessionRequest> = await createRecgate(options);
express().use(recgate.middleware);
await Fastify().register(recgate.plugin, { prefix: '/recordings' });
await Fastify().register(fastifyRecgate, { prefix: '/r', jwtSecret: 'x'.repeat(32) });
await recgate.registerCall({ callSid: 'CA00000000000000000000000000000000', businessId: 'biz-a' });
const closed: Promise<void> = recgate.close();
// @ts-expect-error: a prefix is a string
const badPrefix: RecgateOptions = { prefix: 1 };
// @ts-expect-error: a hook answers a business id, not a number
const badHook: AuthenticateHook = () => 42;
// @ts-expect-error: an embedded recgate is no number (the types are not any)
const notANumber: number = recgate;
export { badHook, badPrefix, closed, notANumber };
`;

const USER_TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
  },
  files: ['user.ts'],
};

describe('the package, built, packed and installed into a project', () => {
  let project: string;
  let emulator: Emulator;
  const cleanups: Array<() => unknown> = [];
  const suite = { after: (fn: () => unknown) => cleanups.unshift(fn) };

  before(async () => {
    emulator = await emulatorFor(suite);
    const stage = tempDir(suite, 'recgate-pack-');
    for (const entry of ['package.json', 'README.md', 'bin', 'ui']) {
      cpSync(path.join(ROOT, entry), path.join(stage, entry), { recursive: true });
    }
    await run(process.execPath, [
      path.join(ROOT, 'node_modules/typescript/bin/tsc'),
      '-p',
      path.join(ROOT, 'tsconfig.build.json'),
      '--outDir',
      path.join(stage, 'dist'),
      '--sourceMap',
      'false',
    ]);
    project = tempDir(suite, 'recgate-user-');
    // --ignore-scripts: `prepare` would build again into the stage; the build above is the one packed.
    const { stdout } = await run(
      'npm',
      ['pack', '--ignore-scripts', '--json', '--pack-destination', project],
      {
        cwd: stage,
      },
    );
    const [packed] = JSON.parse(stdout) as Array<{ filename: string }>;
    const modules = path.join(project, 'node_modules');
    await mkdir(path.join(modules, 'recgate'), { recursive: true });
    await run('tar', [
      '-xzf',
      path.join(project, packed!.filename),
      '-C',
      path.join(modules, 'recgate'),
      '--strip-components=1',
    ]);
    for (const name of readdirSync(path.join(ROOT, 'node_modules'))) {
      if (name !== 'recgate' && !name.startsWith('.')) {
        symlinkSync(path.join(ROOT, 'node_modules', name), path.join(modules, name));
      }
    }
    writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({
        name: 'embed-user',
        private: true,
        type: 'module',
        dependencies: { recgate: '0.1.0' },
      }),
    );
  });
  after(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it('ships only its runtime files, and imports by name with type declarations', async () => {
    const installed = path.join(project, 'node_modules/recgate');
    const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8')) as {
      exports: { '.': { types: string; default: string } };
    };
    assert.deepEqual(readdirSync(installed).sort(), ['README.md', 'bin', 'dist', 'package.json', 'ui']);
    assert.ok(
      readFileSync(path.join(installed, manifest.exports['.'].types), 'utf8').includes('createRecgate'),
    );
    const { stdout } = await run(
      process.execPath,
      ['--input-type=module', '-e', "console.log(Object.keys(await import('recgate')).sort().join(' '))"],
      { cwd: project },
    );
    assert.equal(stdout.trim(), 'createRecgate fastifyRecgate');
    // The CLI still runs from the package's bin.
    const help = await run(process.execPath, [path.join(installed, 'bin/recgate.js'), '--help'], {
      cwd: project,
    });
    assert.match(help.stdout, /serve/);
  });

  it("type-checks a user's TypeScript file against the shipped declarations", async () => {
    writeFileSync(path.join(project, 'user.ts'), USER_TS);
    writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify(USER_TSCONFIG));
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    await run(process.execPath, [tsc, '-p', project]).catch((err: { stdout?: string }) => {
      assert.fail(`tsc --noEmit failed:\n${err.stdout}`);
    });
  });

  for (const example of ['express', 'fastify']) {
    it(`runs the README's ${example} app, which plays recordings`, async (t) => {
      const source = readFileSync(path.join(ROOT, 'examples', `${example}.mjs`), 'utf8');
      assert.ok(
        README.includes(`\`\`\`js\n${source}\`\`\``),
        `README.md includes examples/${example}.mjs verbatim`,
      );
      assert.equal(source.trimEnd().split('\n').length, 15);
      writeFileSync(path.join(project, `${example}.mjs`), source);
      const dataDir = tempDir(t, 'recgate-example-');
      const child = spawn(process.execPath, [`${example}.mjs`], {
        cwd: project,
        env: {
          PATH: process.env.PATH,
          PORT: '0',
          RECGATE_JWT_SECRET: JWT_SECRET,
          RECGATE_DATA_DIR: dataDir,
          RECGATE_LOG_LEVEL: 'silent',
          TWILIO_ACCOUNT_SID: emulator.accountSid,
          TWILIO_AUTH_TOKEN: emulator.authToken,
          TWILIO_API_BASE: emulator.url,
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      t.after(() => stop(child));
      const port = await portOf(child);
      const base = `http://127.0.0.1:${port}`;
      // The host app registers its calls; here a recgate of the test's own, on the same data dir.
      const registrar = await createRecgate({
        jwtSecret: JWT_SECRET,
        twilio: { accountSid: emulator.accountSid, authToken: emulator.authToken, apiBase: emulator.url },
        dataDir,
        logLevel: 'silent',
        env: {},
      });
      const call = await recordedCall(emulator, registrar, 'biz-a');
      const theirs = await recordedCall(emulator, registrar, 'biz-b');
      await registrar.close();

      const page = (await get(`${base}/play/${call.callSid}`)).body.toString();
      const src = /<audio controls src="([^"]+)">/.exec(page)?.[1];
      assert.equal(src, `/recordings/api/calls/${call.callSid}/download`);
      const session = { cookie: 'session=biz-a' };
      const played = await get(`${base}${src}`, { headers: session });
      assert.equal(played.status, 200);
      assert.equal(sha256(played.body), call.sha256);
      const seek = await get(`${base}${src}`, { headers: { ...session, range: 'bytes=1000-' } });
      assert.equal(seek.status, 206);
      assert.deepEqual(seek.body, played.body.subarray(1000));
      const other = await get(`${base}/recordings/api/calls/${theirs.callSid}/download`, {
        headers: session,
      });
      assert.equal(other.status, 404);
      assert.equal((await get(`${base}${src}`)).status, 401);
      // SIGTERM closes the server, then recgate: the process ends by itself, nothing left holding it.
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0);
    });
  }
});

/** The port an example prints (`port N`) once it listens. */
async function portOf(child: ChildProcess): Promise<number> {
  const lines = createInterface({ input: child.stdout! });
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`the example exited (${code}) before listening`))),
  );
  const listening = (async () => {
    for await (const line of lines) {
      const m = /^port (\d+)$/.exec(line);
      if (m) return Number(m[1]);
    }
    throw new Error('the example closed its output before listening');
  })();
  return Promise.race([listening, exited]);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}
