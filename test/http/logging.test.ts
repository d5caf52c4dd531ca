import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { request } from 'undici';
import type { CallSid } from '../../src/sid.js';
import { until } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';
import { JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

let stack: Stack;
const { logger, lines } = captureLogs();

before(async () => {
  stack = await startStack({ logger });
});
after(() => stack?.close());

it('logs cache events and requests with a request id, and never a secret', async () => {
  const rec = await stack.emulator.createRecording({ bytes: 20_000 });
  await stack.register({ businessId: 'acme', callSid: rec.call_sid as CallSid });
  const token = await stack.token('acme');
  const urlRes = await request(`${stack.url}/api/calls/${rec.call_sid}/playback-url`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
  });
  const { url } = (await urlRes.body.json()) as { url: string };
  const sig = new URL(url).searchParams.get('sig')!;
  const ref = { ownerCallSid: rec.call_sid as CallSid, recordingSid: rec.recording_sid as never };
  for (let i = 0; i < 2; i++) {
    const res = await request(url, { headers: { 'x-request-id': `req-${i}` } });
    assert.equal(res.headers['x-request-id'], `req-${i}`);
    await res.body.dump();
    // The second play must find the finished file, which is renamed a moment after the last byte is sent.
    for (let j = 0; j < 100 && (await stack.gateway.cache.state(ref)).state !== 'cached'; j++) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  // An id that is not well formed (spaces, a forged log field, too long) is replaced, not echoed or logged.
  for (const forged of ['two words', 'x"}{"level":60', 'a'.repeat(65)]) {
    const res = await request(`${stack.url}/healthz`, { headers: { 'x-request-id': forged } });
    await res.body.dump();
    assert.match(
      String(res.headers['x-request-id']),
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
  }
  const bad = await request(`${stack.url}/api/calls`, { headers: { authorization: `Bearer ${token}x` } });
  await bad.body.dump();
  await new Promise((r) => setTimeout(r, 50));
  await until('recording_saved', () => lines.some((l) => l.includes('"event":"recording_saved"')), 5000);

  const all = lines.join('\n');
  for (const secret of [token, sig, JWT_SECRET, stack.emulator.authToken]) {
    assert.ok(!all.includes(secret), `a secret leaked into the logs: ${secret.slice(0, 8)}…`);
  }
  const events = lines.map((l) => JSON.parse(l) as { event?: string; reqId?: string });
  assert.ok(events.some((e) => e.event === 'cache_miss'));
  assert.ok(events.some((e) => e.event === 'recording_saved'));
  assert.ok(events.some((e) => e.event === 'cache_hit'));
  assert.ok(events.some((e) => e.reqId === 'req-1'));
});
