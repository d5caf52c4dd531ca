// The image's HEALTHCHECK: GET /healthz on the port and interface the gateway was configured with (read
// by recgate's own configuration code, so the two cannot disagree). Exit 0 when it answers 200.
import { configFromEnv } from './dist/config/config.js';

const { host = '127.0.0.1', port = 8080 } = configFromEnv(process.env);
const target =
  host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;

try {
  const res = await fetch(`http://${target}:${port}/healthz`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.status === 200 ? 0 : 1);
} catch {
  process.exit(1);
}
