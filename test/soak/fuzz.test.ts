/**
 * The fuzz loop (issue 11, item 4): generated requests against a real `recgate serve --workers 2` process
 * (from source) in front of the emulator. Methods, paths (encoded, traversal, overlong), headers (Range,
 * If-Range, conditionals, hostile Authorization, odd content types) and bodies come from fast-check with a
 * fixed seed, so every run sends the same requests; a few percent go over a raw socket, byte for byte, to
 * reach what an HTTP client refuses to send (bare LF, NUL, duplicate Content-Length, smuggling shapes).
 *
 * It passes when: no log line holds a secret (the JWT secret, the admin token, Twilio's auth token, the tokens
 * and playback signatures sent); no response is a 5xx (none is documented for a healthy upstream and a writable disk);
 * every request answers within {@link ANSWER_BOUND_MS}; the workers are the same processes at the end; and
 * the sum of the workers' VmRSS at the end is within 10% of what it was after the warm-up (each the median of
 * the readings over a tenth of the run, so that one garbage collection's timing does not decide).
 *
 * `RECGATE_FUZZ_REQUESTS` (default 15,000: 5,000 to warm up, 10,000 measured) and `RECGATE_FUZZ_SEED` (default 11) change the run:
 * `RECGATE_FUZZ_REQUESTS=200000 node --import tsx --test test/soak/fuzz.test.ts`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { Agent, request } from 'undici';
import { readMemory } from '../../bench/lib/procfs.js';
import { ANSWER_BOUND_MS, fuzzContext, requestArbitrary, sendHttp, sendRaw } from '../../soak/fuzz.js';
import { startEmulator } from '../../src/emulator/index.js';
import type { CallSid } from '../../src/sid.js';
import { startServeProcess } from '../helpers/serve-process.js';
import { ADMIN_TOKEN, JWT_SECRET } from '../helpers/stack.js';

const COUNT = Number(process.env.RECGATE_FUZZ_REQUESTS ?? 15_000);
const SEED = Number(process.env.RECGATE_FUZZ_SEED ?? 11);
const CONCURRENCY = 16;
/**
 * Requests sent before the baseline RSS is read: the workers' RSS climbs for the first ~5,000 requests
 * (JIT, heap sizing, the recordings' first reads) and is flat after (measured up to 80,000).
 */
const WARM_UP = Math.min(5_000, Math.floor(COUNT / 3));
/** RSS is read every this many requests; a window's figure is the median of its readings (GC timing aside). */
const RSS_EVERY = 25;
/** The baseline window starts at WARM_UP, the end window ends with the last request; each this long. */
const RSS_WINDOW = Math.max(RSS_EVERY, Math.floor(COUNT / 10));
const RECORDINGS = 4;

/** Worker pids: the processes that logged Fastify's "Server listening" line. */
function workerPids(logs: Array<Record<string, unknown>>): number[] {
  const pids = logs
    .filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening'))
    .map((l) => l.pid as number);
  return [...new Set(pids)].sort((a, b) => a - b);
}

function median(readings: Array<{ bytes: number }>): number {
  const sorted = readings.map((r) => r.bytes).sort((a, b) => a - b);
  assert.ok(sorted.length > 0, 'RSS was read');
  return sorted[Math.floor(sorted.length / 2)]!;
}

function rssSum(pids: number[]): number {
  return pids.reduce((sum, pid) => {
    const m = readMemory(pid);
    assert.ok(m, `worker ${pid} is gone`);
    return sum + m.rss;
  }, 0);
}

test(`fuzz: ${COUNT} generated requests against recgate serve --workers 2`, {
  timeout: 600_000,
}, async (t) => {
  const emulator = await startEmulator({ port: 0, logger: false });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'recgate-fuzz-'));
  const gateway = await startServeProcess({ workers: 2, dataDir, emulator });
  const agent = new Agent({ connections: CONCURRENCY, pipelining: 0 });
  t.after(async () => {
    await agent.close();
    await gateway.stop();
    await emulator.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const calls: CallSid[] = [];
  for (let i = 0; i < RECORDINGS; i++) {
    const rec = await emulator.createRecording({ bytes: 16_000 + i * 8_000 });
    const put = await request(`${gateway.url}/api/admin/calls/${rec.call_sid}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ business_id: 'acme' }),
    });
    assert.equal(put.statusCode, 201);
    await put.body.dump();
    calls.push(rec.call_sid as CallSid);
  }
  const ctx = await fuzzContext(gateway.url, calls, JWT_SECRET, ADMIN_TOKEN);
  const requests = fc.sample(requestArbitrary(ctx), { seed: SEED, numRuns: COUNT });
  const port = Number(new URL(gateway.url).port);
  const pidsBefore = workerPids(gateway.logs);
  assert.equal(pidsBefore.length, 2);

  const statuses = new Map<number, number>();
  const failures: string[] = [];
  let slowestMs = 0;
  let next = 0;
  const rss: Array<{ at: number; bytes: number }> = [];
  const started = performance.now();
  async function client(): Promise<void> {
    for (;;) {
      const i = next++;
      if (i >= requests.length) return;
      if (i % RSS_EVERY === 0) rss.push({ at: i, bytes: rssSum(pidsBefore) });
      const r = requests[i]!;
      const what =
        r.kind === 'http'
          ? `#${i} ${r.method} ${r.path.slice(0, 120)} ${JSON.stringify(r.headers).slice(0, 200)}`
          : `#${i} raw ${JSON.stringify(r.bytes.toString('latin1').slice(0, 120))}`;
      try {
        const outcome =
          r.kind === 'http' ? await sendHttp(agent, gateway.url, r) : await sendRaw(port, r.bytes);
        statuses.set(outcome.status, (statuses.get(outcome.status) ?? 0) + 1);
        slowestMs = Math.max(slowestMs, outcome.ms);
        if (outcome.status >= 500) failures.push(`${what} → ${outcome.status}`);
        if (outcome.ms > ANSWER_BOUND_MS) failures.push(`${what} took ${Math.round(outcome.ms)} ms`);
        // Only input without a request line at all (blank lines, which RFC 9112 §2.2 lets a server skip)
        // may end in a close without an answer.
        const blankOnly = r.kind === 'raw' && /^[\r\n]*$/.test(r.bytes.toString('latin1'));
        if (outcome.status === 0 && !blankOnly) failures.push(`${what} → closed without a status`);
      } catch (err) {
        failures.push(`${what} → ${(err as Error).message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, client));
  const elapsedS = (performance.now() - started) / 1000;
  rss.push({ at: COUNT, bytes: rssSum(pidsBefore) });
  const baselineRss = median(rss.filter((r) => r.at >= WARM_UP && r.at < WARM_UP + RSS_WINDOW));
  const endRss = median(rss.filter((r) => r.at >= COUNT - RSS_WINDOW));
  const pidsAfter = workerPids(gateway.logs);

  const ready = await request(`${gateway.url}/readyz`, { dispatcher: agent });
  await ready.body.dump();
  const table = [...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}: ${n}`);
  t.diagnostic(
    `seed ${SEED}, ${COUNT} requests in ${elapsedS.toFixed(1)} s, slowest ${Math.round(slowestMs)} ms; ` +
      `statuses ${table.join(', ')}; worker RSS ${(baselineRss / 2 ** 20).toFixed(1)} MiB after ` +
      `${WARM_UP} requests, ${(endRss / 2 ** 20).toFixed(1)} MiB at the end ` +
      `(${(((endRss - baselineRss) / baselineRss) * 100).toFixed(1)}%)`,
  );

  const secrets = [...ctx.secrets, emulator.authToken];
  const leaks = gateway.logs
    .map((line) => JSON.stringify(line))
    .filter((line) => secrets.some((secret) => line.includes(secret)));
  t.diagnostic(`${gateway.logs.length} log lines scanned for ${secrets.length} secrets`);

  assert.deepEqual(leaks.slice(0, 5), [], `${leaks.length} log lines hold a secret`);
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
  assert.equal(
    [...statuses.values()].reduce((a, b) => a + b, 0),
    COUNT,
  );
  assert.deepEqual(pidsAfter, pidsBefore, 'no worker died or was replaced');
  for (const pid of pidsBefore) assert.ok(readMemory(pid), `worker ${pid} runs`);
  assert.equal(ready.statusCode, 200, 'still ready');
  assert.ok(endRss <= baselineRss * 1.1, `RSS grew from ${baselineRss} to ${endRss} bytes`);
  // The mix reached the recordings, not only the refusals.
  for (const status of [200, 206, 304, 400, 401, 404, 405]) assert.ok(statuses.has(status), `some ${status}`);
});
