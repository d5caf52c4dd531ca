/** The UI's static routes (no browser needed): allow-list, types, caching and security headers. */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { UI_CONTENT_SECURITY_POLICY, UI_DIR, uiRoutes } from '../../src/http/ui.js';

const JAVASCRIPT = 'text/javascript; charset=utf-8';

/** Everything the UI serves, with its media type. */
const ROUTES: ReadonlyArray<readonly [url: string, type: string]> = [
  ['/', 'text/html; charset=utf-8'],
  ['/ui/app.css', 'text/css; charset=utf-8'],
  ['/ui/favicon.svg', 'image/svg+xml'],
  ['/ui/app.js', JAVASCRIPT],
  ['/ui/api.js', JAVASCRIPT],
  ['/ui/format.js', JAVASCRIPT],
  ['/ui/list.js', JAVASCRIPT],
  ['/ui/player.js', JAVASCRIPT],
  ['/ui/session.js', JAVASCRIPT],
];

/** The file in `ui/` behind a route. */
const fileOf = (url: string) => (url === '/' ? 'index.html' : url.slice('/ui/'.length));

/** The served ES modules, by file name in `ui/`. */
const MODULES = ROUTES.filter(([, type]) => type === JAVASCRIPT).map(([url]) => fileOf(url));

let app: FastifyInstance;

before(async () => {
  app = Fastify();
  await uiRoutes(app);
  await app.ready();
});

after(() => app.close());

const uiText = (file: string) => readFile(new URL(file, UI_DIR), 'utf8');

/** The specifiers of a module's static imports and re-exports (an import clause has no `(`, `=` or `;`). */
function importsOf(source: string): string[] {
  const patterns = [
    /^\s*(?:import|export)\b[^;'"()=]*?\bfrom\s*['"]([^'"]+)['"]/gm,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
  ];
  return patterns.flatMap((pattern) => [...source.matchAll(pattern)].map((match) => match[1]!));
}

test('serves the page and its assets with their types and security headers', async () => {
  for (const [url, type] of ROUTES) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 200, url);
    assert.equal(res.headers['content-type'], type, url);
    assert.equal(res.headers['content-security-policy'], UI_CONTENT_SECURITY_POLICY, url);
    assert.equal(res.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(res.headers['referrer-policy'], 'no-referrer', url);
    assert.equal(res.headers['x-frame-options'], 'DENY', url);
    assert.equal(res.headers['cache-control'], 'no-cache', url);
    assert.match(String(res.headers.etag), /^"[A-Za-z0-9_-]+"$/, url);
    assert.equal(res.body, await uiText(fileOf(url)), url);
  }
  assert.match(
    UI_CONTENT_SECURITY_POLICY,
    /default-src 'self'; media-src 'self' blob:; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'/,
  );
  assert.doesNotMatch(UI_CONTENT_SECURITY_POLICY, /unsafe-|strict-dynamic|nonce-|sha\d+-|https?:|\*/);
});

test('answers a matching If-None-Match with 304, and HEAD without a body', async () => {
  const etags = new Set<string>();
  for (const [url] of ROUTES) {
    const first = await app.inject({ url });
    const etag = String(first.headers.etag);
    etags.add(etag);
    const again = await app.inject({ url, headers: { 'if-none-match': `W/${etag}, "x"` } });
    assert.equal(again.statusCode, 304, url);
    assert.equal(again.body, '', url);
    assert.equal(again.headers.etag, etag, url);
    assert.equal(again.headers['content-security-policy'], UI_CONTENT_SECURITY_POLICY, url);
    const other = await app.inject({ url, headers: { 'if-none-match': '"x"' } });
    assert.equal(other.statusCode, 200, url);
    const head = await app.inject({ method: 'HEAD', url });
    assert.equal(head.statusCode, 200, url);
    assert.equal(head.body, '', url);
  }
  assert.equal(etags.size, ROUTES.length, 'each file has its own ETag');
});

test('serves every module the page loads, and only those', async () => {
  const html = await uiText('index.html');
  const entries = [...html.matchAll(/<script\b[^>]*\bsrc="([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(entries, ['/ui/app.js'], 'one script: the entry module');
  assert.match(html, /<script type="module" src="\/ui\/app\.js"><\/script>/);

  // Every module reachable from the entry, following static imports.
  const reached = new Set<string>();
  const queue = ['app.js'];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (reached.has(file)) continue;
    reached.add(file);
    const source = await uiText(file);
    assert.doesNotMatch(source, /\bimport\s*\(/, `${file}: static imports only`);
    for (const specifier of importsOf(source)) {
      assert.match(specifier, /^\.\/[a-z-]+\.js$/, `${file} imports ${specifier}: a sibling module`);
      queue.push(specifier.slice(2));
    }
  }
  assert.deepEqual([...reached].sort(), [...MODULES].sort(), 'the modules imported are the modules served');

  const preloaded = [...html.matchAll(/<link rel="modulepreload" href="\/ui\/([^"]+)">/g)].map((m) => m[1]);
  assert.deepEqual(
    preloaded.sort(),
    MODULES.filter((file) => file !== 'app.js').sort(),
    'index.html preloads every imported module',
  );

  const files = (await readdir(UI_DIR)).filter((file) => file.endsWith('.js'));
  assert.deepEqual(files.sort(), [...MODULES].sort(), 'no module in ui/ is left unused');
});

test('serves nothing outside its allow-list', async () => {
  for (const url of [
    '/ui/',
    '/ui/index.html',
    '/ui/../package.json',
    '/ui/%2e%2e/package.json',
    '/ui/app.js.map',
    '/index.html',
    '/ui/Player.js',
    '/ui/player',
    '/ui/player.mjs',
    '/ui/player.js/',
    '/ui//player.js',
    '/ui/player.js;x',
    '/ui/player.js%00',
    '/ui/session.js.map',
    '/player.js',
    '/ui/ui/api.js',
  ]) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 404, url);
  }
});

test('fails at start-up, naming the file, when a file of the UI is missing', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'recgate-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const file of ROUTES.map(([url]) => fileOf(url))) {
    const copy = path.join(dir, file.replace(/\W/g, '-'));
    await cp(UI_DIR, copy, { recursive: true });
    await rm(path.join(copy, file));
    const incomplete = Fastify();
    await assert.rejects(
      uiRoutes(incomplete, { dir: pathToFileURL(`${copy}/`) }),
      (err: Error) => err.message === `web UI file missing: ${path.join(copy, file)}`,
      file,
    );
    await incomplete.close();
  }
  const misconfigured = Fastify();
  await assert.rejects(
    uiRoutes(misconfigured, { dir: pathToFileURL(dir) }),
    /options\.dir must be a URL ending in "\/"/,
  );
  await misconfigured.close();
});

test('the UI loads nothing from other origins and never uses innerHTML', async () => {
  for (const file of ['index.html', 'app.css', ...MODULES]) {
    const text = await uiText(file);
    assert.doesNotMatch(text, /(src|href)=["']?(https?:)?\/\//i, file);
    assert.doesNotMatch(text, /@import|url\(\s*["']?https?:/i, file);
    if (file.endsWith('.js')) {
      assert.doesNotMatch(text, /\.innerHTML\s*=|insertAdjacentHTML|document\.write/, file);
      assert.doesNotMatch(text, /\beval\(|new Function\(/, file);
    }
  }
});
