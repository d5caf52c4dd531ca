/**
 * recgate as a library (`import { createRecgate } from 'recgate'`): the recordings API mounted inside an
 * existing backend, under its prefix and behind its own authentication. See the README's "Embedding".
 *
 * - {@link createRecgate} opens the runtime and gives the routes as a Fastify plugin (`plugin`), a Node
 *   `http` handler (`handler`) and Express-style middleware (`middleware`), with `close()`.
 * - {@link fastifyRecgate} is the same as a self-contained Fastify plugin that closes with its app.
 */
export type {
  AuthenticateHook,
  CacheOptions,
  RecgateOptions,
  TwilioOptions,
} from './embed/options.js';
export {
  type CallRegistration,
  createRecgate,
  fastifyRecgate,
  type Middleware,
  type NodeHandler,
  type Recgate,
} from './embed/recgate.js';
