/**
 * recgate inside another app: the download, playback-URL, calls and peaks routes mounted by an existing backend,
 * under its own prefix and with its own authentication, over the same runtime `recgate serve` runs
 * (src/server.ts `openGatewayRuntime`: the call log, the recording store and its lock, the cache index).
 *
 * Three ways in, one code path: the routes are always src/http/plugin.ts. A Fastify host registers it in
 * its own app; the Node handler and the Express middleware hand the request to an internal Fastify
 * instance with `routing(req, res)`, which streams as a listening server does, and pass on what it does
 * not own.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginAsync,
  LogController,
} from 'fastify';
import { isBusinessId } from '../auth/jwt.js';
import type { CallUpsert } from '../call-log/call-log.js';
import { createError } from '../errors.js';
import type { AppDeps } from '../http/deps.js';
import { installErrorHandlers, sendError } from '../http/errors.js';
import { observeRequests, requestIdOptions } from '../http/observe.js';
import { apiPlugin } from '../http/plugin.js';
import { type RouteTable, trackRoutes } from '../http/route-table.js';
import { type GatewayRuntime, openGatewayRuntime } from '../server.js';
import { isCallSid, isRecordingSid } from '../sid.js';
import { checkPrefix, configFromOptions, type RecgateOptions } from './options.js';

/** A Node `http` request handler: `http.createServer(recgate.handler)`. Answers every request itself. */
export type NodeHandler<Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
) => void;

/**
 * Express-style middleware (`app.use(recgate.middleware)`, also Connect and Node servers with a
 * dispatcher): requests outside recgate's routes go on to `next()`.
 */
export type Middleware<Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
  next: (err?: unknown) => void,
) => void;

/** A call as the host app registers it (see {@link Recgate.registerCall}). */
export interface CallRegistration {
  /** `CA` and 32 hex digits. */
  callSid: string;
  /** The tenant the call belongs to; what `authenticate` returns for its users. */
  businessId: string;
  /** The call this leg was dialled from, whose recording it may play. @default unchanged (none when new) */
  parentCallSid?: string | null;
  /** The call's recording, when known; else found at Twilio on first play. @default unchanged (none when new) */
  recordingSid?: string | null;
}

/** The call-log entry `call` describes, or a TypeError naming its first bad field. */
function callUpsert(call: CallRegistration): CallUpsert {
  if (call === null || typeof call !== 'object') throw new TypeError('call must be an object');
  const { callSid, businessId, parentCallSid, recordingSid } = call;
  if (!isCallSid(callSid)) throw new TypeError('call.callSid must match ^CA[0-9a-f]{32}$');
  if (!isBusinessId(businessId)) {
    throw new TypeError('call.businessId must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$');
  }
  const input: CallUpsert = { callSid, businessId };
  if (parentCallSid !== undefined) {
    if (parentCallSid !== null && (!isCallSid(parentCallSid) || parentCallSid === callSid)) {
      throw new TypeError('call.parentCallSid must match ^CA[0-9a-f]{32}$ and differ from callSid');
    }
    input.parentCallSid = parentCallSid;
  }
  if (recordingSid !== undefined) {
    if (recordingSid !== null && !isRecordingSid(recordingSid)) {
      throw new TypeError('call.recordingSid must match ^RE[0-9a-f]{32}$');
    }
    input.recordingSid = recordingSid;
  }
  return input;
}

/** An embedded recgate: its routes three ways, and the one thing that releases it. */
export interface Recgate<Req extends IncomingMessage = IncomingMessage> {
  /**
   * The routes as a Fastify plugin: `app.register(recgate.plugin, { prefix: '/recordings' })`. Encapsulated:
   * its error handler answers its own routes only. Closing the Fastify app does not close recgate.
   */
  readonly plugin: FastifyPluginAsync;
  /** The routes at `options.prefix` as a Node `http` handler; any other path answers 404 RECGATE_ROUTE_NOT_FOUND. */
  readonly handler: NodeHandler<Req>;
  /** The routes at `options.prefix` as Express-style middleware; any other path goes on to `next()`. */
  readonly middleware: Middleware<Req>;
  /**
   * Registers or updates a call in the call log, as the admin API's `PUT /api/admin/calls/{callSid}` does:
   * which business it belongs to, and where its recording is. The host app calls it as its calls happen
   * (or runs the gateway's admin API or webhook beside it on the same database). Throws a TypeError naming
   * a malformed field, and RECGATE_FORBIDDEN for a parent registered to another business.
   */
  registerCall(call: CallRegistration): Promise<void>;
  /**
   * Releases the call log's connections, the download locks, the background jobs and the internal Fastify
   * instance. Stop the host's server first: downloads still running are cancelled. Idempotent.
   */
  close(): Promise<void>;
}

/** The runtime's dependencies with the host's `authenticate` in place of the bearer JWT, when it gives one. */
function depsFor<Req extends IncomingMessage>(
  runtime: GatewayRuntime,
  options: RecgateOptions<Req>,
): AppDeps {
  const hook = options.authenticate;
  if (hook === undefined) return runtime.deps;
  return { ...runtime.deps, authenticate: (request) => hook(request.raw as Req, request) };
}

/**
 * Opens recgate's runtime for an embedding app and returns its routes as a Fastify plugin, a Node handler
 * and Express middleware. Options left out come from the environment `recgate serve` reads, then the
 * defaults (see {@link RecgateOptions}); bad options throw a TypeError that names them.
 */
export async function createRecgate<Req extends IncomingMessage = IncomingMessage>(
  options: RecgateOptions<Req> = {},
): Promise<Recgate<Req>> {
  const config = configFromOptions(options);
  const prefix = checkPrefix(options.prefix);
  const runtime = await openGatewayRuntime(
    config,
    options.logger === undefined ? {} : { logger: options.logger },
  );
  const deps = depsFor(runtime, options);
  let inner: { app: FastifyInstance; routes: RouteTable };
  try {
    inner = await internalApp(deps, prefix);
  } catch (err) {
    await runtime.close();
    throw err;
  }
  const dispatch = (req: Req, res: ServerResponse, next?: (err?: unknown) => void) => {
    // Mounted with a path (`app.use('/x', mw)`), Express strips it from req.url; routes match the whole path.
    const url = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';
    if (next !== undefined && inner.routes.allowed(url.split('?', 1)[0]!).length === 0) return next();
    req.url = url;
    // A body parser of the host's (`express.json()`) may have read the body already: Fastify would wait for
    // it forever. recgate's routes read no body, so the request goes on as one without.
    if (req.readableEnded) {
      delete req.headers['content-type'];
      delete req.headers['content-length'];
      delete req.headers['transfer-encoding'];
    }
    inner.app.routing(req, res);
  };
  let closing: Promise<void> | undefined;
  return {
    plugin: async (app) => {
      // In the plugin's own context: the host's other routes are not counted as recgate's. The host's
      // request logging, when on, logs these requests; recgate does not log them twice.
      observeRequests(app, { log: false });
      await apiPlugin(app, { deps });
    },
    handler: (req, res) => dispatch(req, res),
    middleware: (req, res, next) => dispatch(req, res, next),
    registerCall: async (call) => {
      await runtime.deps.state.register(callUpsert(call));
    },
    close: () => {
      closing ??= inner.app.close().then(() => runtime.close());
      return closing;
    },
  };
}

/**
 * The Fastify instance behind the Node handler and the Express middleware: the routes at `prefix`, recgate's
 * error shape, 404 and 405 (with `Allow`) for the rest. It never listens; requests come via `routing`.
 */
async function internalApp(
  deps: AppDeps,
  prefix: string,
): Promise<{ app: FastifyInstance; routes: RouteTable }> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.config.bodyLimitBytes,
    ...requestIdOptions,
    routerOptions: { maxParamLength: 200 },
    frameworkErrors: (error, _request, reply) => {
      sendError(reply, createError('RECGATE_INVALID_REQUEST', { cause: error }));
    },
  });
  const routes = trackRoutes(app);
  observeRequests(app);
  installErrorHandlers(app, routes);
  await app.register(apiPlugin, { deps, prefix });
  await app.ready();
  return { app, routes };
}

/**
 * A Fastify plugin that opens recgate with `options` when registered and closes it with the app:
 * `app.register(fastifyRecgate, { prefix: '/recordings', authenticate })`. Fastify's `prefix` places the
 * routes (`options.prefix` is Fastify's here, not the Node handler's).
 */
export const fastifyRecgate: FastifyPluginAsync<RecgateOptions<IncomingMessage>> = async (app, options) => {
  const { prefix: _fastifys, ...rest } = options;
  const recgate = await createRecgate(rest);
  app.addHook('onClose', () => recgate.close());
  await recgate.plugin(app, {});
};
