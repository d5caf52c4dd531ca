/** The route table Fastify's onRoute hook fills, and the 405-with-Allow answers it makes possible. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { installErrorHandlers } from '../../src/http/errors.js';
import { routeTableOf, trackRoutes } from '../../src/http/route-table.js';

async function app() {
  const server = Fastify();
  installErrorHandlers(server, trackRoutes(server));
  server.get('/a/:id', async () => 'a');
  server.put('/a/:id', async () => 'put');
  server.post('/b', async () => 'b');
  server.get('/files/*', async () => 'file');
  await server.register(async (scope) => {
    scope.delete('/scoped/:x/y', async () => 'deleted');
  });
  await server.ready();
  return server;
}

test('lists every route with its methods, HEAD included where Fastify adds it, scoped ones too', async () => {
  const server = await app();
  assert.deepEqual(routeTableOf(server)?.routes(), [
    { url: '/a/:id', methods: ['GET', 'HEAD', 'PUT'] },
    { url: '/b', methods: ['POST'] },
    { url: '/files/*', methods: ['GET', 'HEAD'] },
    { url: '/scoped/:x/y', methods: ['DELETE'] },
  ]);
  await server.close();
});

test('matches parameters as one non-empty segment and wildcards as the rest of the path', async () => {
  const server = await app();
  const table = routeTableOf(server)!;
  assert.deepEqual(table.allowed('/a/1'), ['GET', 'HEAD', 'PUT']);
  assert.deepEqual(table.allowed('/a/'), []);
  assert.deepEqual(table.allowed('/a/1/2'), []);
  assert.deepEqual(table.allowed('/files/x/y/z'), ['GET', 'HEAD']);
  assert.deepEqual(table.allowed('/scoped/q/y'), ['DELETE']);
  assert.deepEqual(table.allowed('/B'), []);
  assert.deepEqual(table.allowed('/b.'), [], 'dots in a URL are literal');
  await server.close();
});

test('another method on a known path is 405 with Allow; an unknown path stays 404', async () => {
  const server = await app();
  const wrong = await server.inject({ method: 'DELETE', url: '/a/1?x=1' });
  assert.equal(wrong.statusCode, 405);
  assert.equal(wrong.headers.allow, 'GET, HEAD, PUT');
  assert.equal(wrong.json().error.code, 'RECGATE_METHOD_NOT_ALLOWED');
  const head = await server.inject({ method: 'HEAD', url: '/b' });
  assert.equal(head.statusCode, 405);
  assert.equal(head.headers.allow, 'POST');
  const unknown = await server.inject({ method: 'GET', url: '/c' });
  assert.equal(unknown.statusCode, 404);
  assert.equal(unknown.headers.allow, undefined);
  assert.equal(unknown.json().error.code, 'RECGATE_ROUTE_NOT_FOUND');
  await server.close();
});
