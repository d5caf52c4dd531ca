/**
 * The fuzz loop's requests against an in-process gateway, printing the JS heap after forced garbage
 * collections every 5,000 requests: what a worker's RSS (test/soak/fuzz.test.ts) cannot tell apart, memory
 * kept alive from memory V8 has not handed back yet. Needs `--expose-gc`:
 *
 *     node --expose-gc --import tsx soak/fuzz-heap.ts [requests=30000] [seed=11]
 *
 * Every request is built, and every string in it flattened, before the first reading, so that the client's
 * own allocations (V8 flattens a concatenated string the first time it is sent) do not count.
 */
import fc from 'fast-check';
import { Agent } from 'undici';
import type { CallSid } from '../src/sid.js';
import { ADMIN_TOKEN, JWT_SECRET, startStack } from '../test/helpers/stack.js';
import { type FuzzRequest, fuzzContext, requestArbitrary, sendHttp, sendRaw } from './fuzz.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');
const count = Number(process.argv[2] ?? 30_000);
const seed = Number(process.argv[3] ?? 11);

function heapAfterGc(): string {
  gc!();
  gc!();
  const { heapUsed, external, rss } = process.memoryUsage();
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `heap ${mib(heapUsed)}, external ${mib(external)}, rss ${mib(rss)}`;
}

/** Copies every string into a flat one (and string bodies into buffers), so sending allocates nothing lasting. */
function flatten(r: FuzzRequest): FuzzRequest {
  if (r.kind === 'raw') return r;
  const headers = Object.fromEntries(
    Object.entries(r.headers).map(([k, v]) => [k, Buffer.from(v).toString()]),
  );
  const path = Buffer.from(r.path).toString();
  return r.body === undefined
    ? { ...r, path, headers }
    : { ...r, path, headers, body: Buffer.from(r.body as string | Buffer) };
}

const stack = await startStack();
const calls: CallSid[] = [];
for (let i = 0; i < 4; i++) {
  const rec = await stack.emulator.createRecording({ bytes: 16_000 + i * 8_000 });
  await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
  calls.push(rec.call_sid as CallSid);
}
const ctx = await fuzzContext(stack.url, calls, JWT_SECRET, ADMIN_TOKEN);
const requests = fc.sample(requestArbitrary(ctx), { seed, numRuns: count }).map(flatten);
const agent = new Agent({ connections: 16 });
const port = Number(new URL(stack.url).port);
let next = 0;
async function client(): Promise<void> {
  for (;;) {
    const i = next++;
    if (i >= requests.length) return;
    if (i % 5_000 === 0) console.log(`${i} requests: ${heapAfterGc()}`);
    const r = requests[i]!;
    await (r.kind === 'http' ? sendHttp(agent, stack.url, r) : sendRaw(port, r.bytes)).catch(() => {});
  }
}
await Promise.all(Array.from({ length: 16 }, client));
console.log(`${count} requests: ${heapAfterGc()}`);
await agent.close();
await stack.close();
