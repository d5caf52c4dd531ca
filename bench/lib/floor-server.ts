/**
 * Entry of the "Fastify floor" peer's process: `floor-server.ts <files dir> <port>`, serving `/files/*`.
 *
 * What one Node process with Fastify costs per request when it does nothing but the bytes: one route, a
 * descriptor opened once per file, a single `bytes=a-b` range read with one `pread` into a reused 64 KiB
 * buffer and sent with its headers in one `writev`; full GETs streamed from a file opened for each. No
 * authentication, no lookup, no conditional requests, several ranges or suffixes ignored (200). Beside
 * recgate in the warm scenario, the gap between the two is what recgate's own work costs, and the gap to
 * nginx what Node's is.
 */
import { createReadStream, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import Fastify from 'fastify';

const [root, port] = process.argv.slice(2);
const CHUNK = 64 * 1024;
const RANGE = /^bytes=(\d{1,15})-(\d{1,15})$/;
const files = new Map<string, { fd: number; size: number }>();
const free: Buffer[] = [];

function open(name: string): { fd: number; size: number } | undefined {
  let file = files.get(name);
  if (file === undefined && /^[A-Za-z0-9_.-]+$/.test(name)) {
    try {
      const fd = openSync(path.join(root!, name), 'r');
      file = { fd, size: fstatSync(fd).size };
      files.set(name, file);
    } catch {
      return undefined;
    }
  }
  return file;
}

const app = Fastify({ logger: false });
app.get<{ Params: { name: string } }>('/files/:name', (request, reply) => {
  const file = open(request.params.name);
  if (file === undefined) return reply.code(404).send();
  const m = RANGE.exec(request.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const end = m ? Math.min(Number(m[2]), file.size - 1) : -1;
  if (m === null || start > end || end - start + 1 > CHUNK) {
    reply.header('content-type', 'audio/mpeg').header('content-length', String(file.size));
    return reply.send(createReadStream(path.join(root!, request.params.name)));
  }
  const length = end - start + 1;
  const buffer = free.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
  const body = buffer.subarray(0, readSync(file.fd, buffer, 0, length, start));
  reply.hijack();
  const res = reply.raw;
  res.writeHead(206, {
    'content-type': 'audio/mpeg',
    'content-length': String(body.length),
    'content-range': `bytes ${start}-${end}/${file.size}`,
    'accept-ranges': 'bytes',
  });
  res.cork();
  res.end(body, () => free.push(buffer));
  res.uncork();
  return reply;
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
process.send?.({ ready: true });
process.on('SIGTERM', () => {
  app.close().then(() => process.exit(0));
});
