/**
 * Every route the gateway registers, as Fastify's `onRoute` hook reports it, so that a path served under
 * other methods answers 405 with `Allow` (RFC 9110 §15.5.6) instead of a 404 that says the path does not
 * exist, and so that tests can walk every route without a hand-kept list (test/http/matrix.test.ts).
 */
import type { FastifyInstance } from 'fastify';

export interface RouteEntry {
  /** The route's URL pattern as registered (`/api/calls/:callSid/download`). */
  readonly url: string;
  /** Methods served there, upper case, HEAD included where Fastify adds it for a GET. */
  readonly methods: readonly string[];
}

export interface RouteTable {
  /** Every route registered so far, sorted by URL. */
  routes(): RouteEntry[];
  /** Methods served at a concrete path (no query), sorted; empty when no route matches the path. */
  allowed(path: string): string[];
}

const tables = new WeakMap<FastifyInstance, RouteTable>();

/** Starts recording routes; call before any route is registered. */
export function trackRoutes(app: FastifyInstance): RouteTable {
  const byUrl = new Map<string, { pattern: RegExp; methods: Set<string> }>();
  app.addHook('onRoute', (route) => {
    let entry = byUrl.get(route.url);
    if (entry === undefined) {
      entry = { pattern: compile(route.url), methods: new Set() };
      byUrl.set(route.url, entry);
    }
    for (const method of [route.method].flat()) entry.methods.add(method.toUpperCase());
  });
  const table: RouteTable = {
    routes: () =>
      [...byUrl]
        .map(([url, { methods }]) => ({ url, methods: [...methods].sort() }))
        .sort((a, b) => a.url.localeCompare(b.url)),
    allowed(path) {
      const methods = new Set<string>();
      for (const { pattern, methods: served } of byUrl.values()) {
        if (pattern.test(path)) for (const m of served) methods.add(m);
      }
      return [...methods].sort();
    },
  };
  tables.set(app, table);
  return table;
}

/** The table {@link trackRoutes} keeps for `app`, if it keeps one. */
export function routeTableOf(app: FastifyInstance): RouteTable | undefined {
  return tables.get(app);
}

/** A URL pattern as a regular expression: `:param` is one non-empty segment, `*` the rest of the path. */
function compile(url: string): RegExp {
  const source = url
    .split(/(:[A-Za-z0-9_]+|\*)/)
    .map((part) => {
      if (part === '*') return '.*';
      if (part.startsWith(':')) return '[^/]+';
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('');
  return new RegExp(`^${source}$`);
}
