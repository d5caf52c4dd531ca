import express from 'express';
import { createRecgate } from 'recgate';

// Twilio's credentials, RECGATE_JWT_SECRET and RECGATE_DATA_DIR come from the environment.
const recgate = await createRecgate({
  prefix: '/recordings',
  // Your own login goes here. This `session` cookie naming the business is a stand-in, not security.
  authenticate: (req) => /(?:^|; )session=([\w-]+)/.exec(req.headers.cookie ?? '')?.[1] ?? null,
});
const app = express();
app.use(recgate.middleware);
const audio = (sid) => `<audio controls src="/recordings/api/calls/${encodeURIComponent(sid)}/download">`;
app.get('/play/:sid', (req, res) => res.send(audio(req.params.sid)));
const server = app.listen(Number(process.env.PORT ?? 3000), () => console.log('port', server.address().port));
process.on('SIGTERM', () => server.close(() => recgate.close()));
