/** Static checks of the Dockerfile and its entrypoint; `npm run test:container` builds and runs them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dockerfileInstructions, imageFacts, methodsServedAt, readRepoFile } from './helpers.js';

test('Dockerfile: multi-stage on ARG BASE_IMAGE (node:20-bookworm-slim), production dependencies only', () => {
  const all = dockerfileInstructions();
  const arg = all.find((i) => i.keyword === 'ARG' && i.args.startsWith('BASE_IMAGE='));
  assert.equal(arg?.args, 'BASE_IMAGE=node:20-bookworm-slim');
  assert.equal(arg?.stage, -1, 'BASE_IMAGE is declared before the first FROM, so every stage can use it');
  const froms = all.filter((i) => i.keyword === 'FROM');
  assert.ok(froms.length >= 2, 'several stages');
  for (const from of froms) assert.match(from.args, /^\$\{BASE_IMAGE\}( AS \w+)?$/);

  const last = froms.length - 1;
  const final = all.filter((i) => i.stage === last);
  const copiedModules = final.filter((i) => i.keyword === 'COPY' && /node_modules/.test(i.args));
  assert.equal(copiedModules.length, 1, 'node_modules comes from one stage');
  const depsStage = /--from=(\w+)/.exec(copiedModules[0]!.args)?.[1];
  const deps = all.filter((i) => i.stage === froms.findIndex((f) => f.args.endsWith(` AS ${depsStage}`)));
  const install = deps.filter((i) => i.keyword === 'RUN' && /npm ci/.test(i.args));
  assert.equal(install.length, 1);
  assert.match(
    install[0]!.args,
    /npm ci --omit=dev/,
    'the copied node_modules holds production dependencies only',
  );
  assert.ok(
    !final.some((i) => i.keyword === 'RUN' && /npm (ci|install)|apt-get/.test(i.args)),
    'the final stage installs nothing',
  );
});

test('Dockerfile: a non-root user owns the data dir, which is the volume and RECGATE_DATA_DIR', () => {
  const image = imageFacts();
  assert.equal(image.dataDir, '/data');
  assert.deepEqual(image.volumes, [image.dataDir]);
  assert.notEqual(image.user, 'root');
  assert.notEqual(image.user, '0');
  assert.ok(image.uid > 0, `useradd gives ${image.user} a fixed uid`);
  const final = dockerfileInstructions().filter(
    (i) => i.stage === Math.max(...dockerfileInstructions().map((x) => x.stage)),
  );
  const chown = final.find((i) => i.keyword === 'RUN' && /chown/.test(i.args));
  assert.match(chown?.args ?? '', new RegExp(`chown -R ${image.user}:${image.user} ${image.dataDir}`));
  assert.equal(image.env.RECGATE_HOST, '0.0.0.0', 'a container listens on every interface');
});

test('Dockerfile: exec-form entrypoint that execs recgate, and a health check on a real /healthz', async () => {
  const image = imageFacts();
  assert.deepEqual(image.entrypoint, ['/usr/local/bin/recgate-entrypoint']);
  const entrypoint = readRepoFile('deploy/docker/entrypoint.sh');
  const lastCommand = entrypoint.trim().split('\n').at(-1);
  assert.equal(
    lastCommand,
    'exec /app/bin/recgate.js "$@"',
    'the shell is replaced by Node, which gets SIGTERM',
  );
  assert.match(entrypoint, /exec setpriv --reuid="\$user"/, 'started as root, it drops to the image user');

  assert.deepEqual(image.healthcheck, ['node', '/app/healthcheck.mjs']);
  const script = readRepoFile('deploy/docker/healthcheck.mjs');
  const paths = [...script.matchAll(/fetch\(`http:\/\/\$\{target\}:\$\{port\}(\/[^`]*)`/g)].map((m) => m[1]!);
  assert.deepEqual(paths, ['/healthz'], 'the health check fetches /healthz');
  const served = await methodsServedAt(paths);
  assert.ok(served.get('/healthz')?.includes('GET'), 'the gateway serves GET /healthz');
});

test('.dockerignore keeps secrets, dependencies and build output out of the context', () => {
  const lines = readRepoFile('.dockerignore')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'));
  assert.equal(lines[0], '*', 'everything is excluded first');
  const allowed = lines.slice(1).map((l) => {
    assert.ok(l.startsWith('!'), `after "*" only exceptions: ${l}`);
    return l.slice(1);
  });
  for (const never of ['.env', 'node_modules', 'dist', 'data', '.git']) {
    assert.ok(!allowed.some((a) => a === never || a.startsWith(`${never}/`)), `${never} stays out`);
  }
  const copied = dockerfileInstructions()
    .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from'))
    .flatMap((i) => i.args.split(' ').slice(0, -1));
  for (const source of copied) {
    assert.ok(
      allowed.some((a) => source === a || source.startsWith(`${a}/`)),
      `${source} is copied, so .dockerignore lets it in`,
    );
  }
});
