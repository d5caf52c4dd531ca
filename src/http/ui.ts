/**
 * The web UI: a few static files from the repository's `ui/` folder, served at `/` and `/ui/…`.
 *
 * The files are an allow-list fixed here, read once at startup and held in memory (they are a few kB),
 * so no request path ever reaches the filesystem and path traversal is impossible by construction.
 * Every response carries a strict Content-Security-Policy: the UI runs only its own scripts and styles,
 * talks only to this origin, and plays audio from this origin (or a `blob:`).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseEntityTagList, weakCompare } from '../serving/conditional.js';

/** The `ui/` folder, found relative to this module: `src/http/ui.ts` under tsx, `dist/http/ui.js` after the build. */
export const UI_DIR = new URL('../../ui/', import.meta.url);

export const UI_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "media-src 'self' blob:",
  "img-src 'self' data:",
  "style-src 'self'",
  "script-src 'self'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

const JAVASCRIPT = 'text/javascript; charset=utf-8';

/**
 * Route → file in `ui/` and its media type. Nothing outside this table is ever served. The scripts are ES
 * modules: `app.js` is the entry the page loads, the others are what it imports (a module the table misses
 * fails to load in the browser, so test/browser/ui-routes.test.ts checks the table against the imports).
 */
const ASSETS: ReadonlyArray<{ route: string; file: string; type: string }> = [
  { route: '/', file: 'index.html', type: 'text/html; charset=utf-8' },
  { route: '/ui/app.css', file: 'app.css', type: 'text/css; charset=utf-8' },
  { route: '/ui/favicon.svg', file: 'favicon.svg', type: 'image/svg+xml' },
  { route: '/ui/app.js', file: 'app.js', type: JAVASCRIPT },
  { route: '/ui/api.js', file: 'api.js', type: JAVASCRIPT },
  { route: '/ui/format.js', file: 'format.js', type: JAVASCRIPT },
  { route: '/ui/list.js', file: 'list.js', type: JAVASCRIPT },
  { route: '/ui/player.js', file: 'player.js', type: JAVASCRIPT },
  { route: '/ui/session.js', file: 'session.js', type: JAVASCRIPT },
];

export interface UiRoutesOptions {
  /** The folder the files are read from, as a URL ending in `/`. @default {@link UI_DIR} */
  dir?: URL;
}

interface LoadedAsset {
  body: Buffer;
  type: string;
  etag: string;
}

/** If-None-Match (weak comparison, RFC 9110 §13.1.2) with the serving core's entity-tag parser. */
function notModified(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const listed = parseEntityTagList(ifNoneMatch);
  if (listed === '*') return true;
  const own = parseEntityTagList(etag);
  return own !== '*' && own.length === 1 && listed.some((tag) => weakCompare(tag, own[0]!));
}

/**
 * Registers the UI routes. Fails at startup, naming the file, if the `ui/` folder is incomplete, rather
 * than serving a broken page later.
 */
export async function uiRoutes(app: FastifyInstance, options: UiRoutesOptions = {}): Promise<void> {
  const dir = options.dir ?? UI_DIR;
  if (!dir.href.endsWith('/')) throw new TypeError(`options.dir must be a URL ending in "/": ${dir.href}`);
  const loaded = await Promise.all(
    ASSETS.map(async (asset): Promise<[string, LoadedAsset]> => {
      const url = new URL(asset.file, dir);
      let body: Buffer;
      try {
        body = await readFile(url);
      } catch (err) {
        throw new Error(`web UI file missing: ${url.pathname}`, { cause: err });
      }
      const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
      return [asset.route, { body, type: asset.type, etag }];
    }),
  );

  for (const [route, asset] of loaded) {
    app.get(route, async (request: FastifyRequest, reply: FastifyReply) => {
      reply.headers({
        'content-security-policy': UI_CONTENT_SECURITY_POLICY,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        'x-frame-options': 'DENY',
        // Names are not fingerprinted, so browsers revalidate each time; the ETag makes that a cheap 304.
        'cache-control': 'no-cache',
        etag: asset.etag,
      });
      if (notModified(request.headers['if-none-match'], asset.etag)) return reply.code(304).send();
      return reply.type(asset.type).send(asset.body);
    });
  }
}
