/** Entry of the @fastify/static peer's process: `static-server.ts <files dir> <port>`, serving `/files/*`. */
import fastifyStatic from '@fastify/static';
import Fastify from 'fastify';

const [root, port] = process.argv.slice(2);
const app = Fastify({ logger: false });
await app.register(fastifyStatic, {
  root: root!,
  prefix: '/files/',
  acceptRanges: true,
  etag: true,
  lastModified: true,
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
process.send?.({ ready: true });
process.on('SIGTERM', () => {
  app.close().then(() => process.exit(0));
});
