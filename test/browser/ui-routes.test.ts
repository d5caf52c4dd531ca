/** The UI's static routes (no browser needed): allow-list, types, caching and security headers. */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import { UI_CONTENT_SECURITY_POLICY, UI_DIR, uiRoutes } from '../../src/http/ui.js';

let app: FastifyInstance;

before(async () => {
  app = Fastify();
  await uiRoutes(app);
  await app.ready();
});

after(() => app.close());

test('serves the page and its assets with their types and security headers', async () => {
  for (const [url, type] of [
    ['/', 'text/html; charset=utf-8'],
    ['/ui/app.js', 'text/javascript; charset=utf-8'],
    ['/ui/app.css', 'text/css; charset=utf-8'],
    ['/ui/favicon.svg', 'image/svg+xml'],
  ]) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 200, url);
    assert.equal(res.headers['content-type'], type, url);
    assert.equal(res.headers['content-security-policy'], UI_CONTENT_SECURITY_POLICY);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['referrer-policy'], 'no-referrer');
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.match(String(res.headers.etag), /^"[A-Za-z0-9_-]+"$/);
  }
  assert.match(
    UI_CONTENT_SECURITY_POLICY,
    /default-src 'self'; media-src 'self' blob:; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'/,
  );
});

test('answers a matching If-None-Match with 304, and HEAD without a body', async () => {
  const first = await app.inject({ url: '/ui/app.js' });
  const again = await app.inject({
    url: '/ui/app.js',
    headers: { 'if-none-match': `W/${first.headers.etag}, "x"` },
  });
  assert.equal(again.statusCode, 304);
  assert.equal(again.body, '');
  const head = await app.inject({ method: 'HEAD', url: '/' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.body, '');
});

test('serves nothing outside its allow-list', async () => {
  for (const url of [
    '/ui/',
    '/ui/index.html',
    '/ui/../package.json',
    '/ui/%2e%2e/package.json',
    '/ui/app.js.map',
    '/index.html',
  ]) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 404, url);
  }
});

test('fails at start-up, naming the file, when a file of the UI is missing', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'recgate-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const file of ['index.html', 'app.css', 'favicon.svg', 'app.js']) {
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
  for (const file of ['index.html', 'app.js', 'app.css']) {
    const text = await readFile(new URL(file, UI_DIR), 'utf8');
    assert.doesNotMatch(text, /(src|href)=["']?(https?:)?\/\//i, file);
    assert.doesNotMatch(text, /@import|url\(\s*["']?https?:/i, file);
    if (file === 'app.js') assert.doesNotMatch(text, /\.innerHTML\s*=|insertAdjacentHTML|document\.write/);
  }
});
