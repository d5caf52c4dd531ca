import Fastify from 'fastify';
import { fastifyRecgate } from 'recgate';

const app = Fastify();
// Twilio's credentials, RECGATE_JWT_SECRET and RECGATE_DATA_DIR come from the environment.
await app.register(fastifyRecgate, {
  prefix: '/recordings',
  // Your own login goes here. This `session` cookie naming the business is a stand-in, not security.
  authenticate: (req) => /(?:^|; )session=([\w-]+)/.exec(req.headers.cookie ?? '')?.[1] ?? null,
});
const audio = (sid) => `<audio controls src="/recordings/api/calls/${encodeURIComponent(sid)}/download">`;
app.get('/play/:sid', (req, reply) => reply.type('text/html').send(audio(req.params.sid)));
const address = await app.listen({ port: Number(process.env.PORT ?? 3000) });
console.log('port', new URL(address).port);
process.on('SIGTERM', () => app.close());
