/**
 * The recordings API as one Fastify plugin: the download, the peaks, the playback URL and the calls routes, with
 * recgate's error shape. It is the one code path for these routes: `buildApp` registers it for
 * `recgate serve`, and src/embed registers it in an embedding app (Fastify's own `prefix` mounts it
 * elsewhere than `/`; playback URLs then point under that prefix).
 *
 * The plugin is encapsulated on purpose (no `fastify-plugin`): its error handler answers only its own
 * routes, and the host app's hooks, decorators and error handler stay the host's.
 */
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from './deps.js';
import { handleError } from './errors.js';
import { callRoutes } from './routes/calls.js';
import { downloadRoutes } from './routes/download.js';
import { peaksRoutes } from './routes/peaks.js';

export interface ApiPluginOptions {
  /** Everything the routes need (see {@link AppDeps}). */
  deps: AppDeps;
}

/**
 * Registers `/api/calls`, `/api/calls/:callSid`, its `/download`, `/peaks` and `/playback-url` under the
 * plugin's prefix.
 */
export async function apiPlugin(app: FastifyInstance, options: ApiPluginOptions): Promise<void> {
  // Errors only: not-found answers stay the host's (Fastify allows one not-found handler per prefix, and the
  // gateway's root one, with 405s from its route table, already covers these paths).
  app.setErrorHandler(handleError);
  downloadRoutes(app, options.deps);
  peaksRoutes(app, options.deps);
  callRoutes(app, options.deps);
}
