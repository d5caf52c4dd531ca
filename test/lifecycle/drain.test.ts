/**
 * drainGateway in process: a response that ends after the listener closed is waited for and its idle
 * keep-alive connection closed at once (not after the 72 s keep-alive timeout); a hurry ends both waits,
 * cutting what is in flight, and the cut download leaves no `{callSid}.mp3`.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Agent, request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { callFiles } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';

/** 250 kB/s per upstream response: 500 kB take 2 s, 2 MB take 8 s. */
const BANDWIDTH = 250_000;

async function streamOne(stack: Stack, bytes: number, agent: Agent) {
  const rec = await stack.emulator.createRecording({ bytes });
  await stack.register({
    businessId: 'acme',
    callSid: rec.call_sid as CallSid,
    recordingSid: rec.recording_sid as RecordingSid,
  });
  const res = await request(`${stack.url}/api/calls/${rec.call_sid}/download`, {
    dispatcher: agent,
    headers: { authorization: `Bearer ${await stack.token('acme')}` },
  });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers.connection, 'keep-alive');
  // Settled at once either way: a cut body must not be an unhandled rejection while the test awaits the drain.
  const body = res.body.arrayBuffer().then(
    (b) => Buffer.from(b),
    (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
  );
  return { rec, body };
}

describe('drainGateway', () => {
  it('waits for a response in flight, then closes its keep-alive connection at once', {
    timeout: 60_000,
  }, async () => {
    const stack = await startStack({ emulator: { bandwidth: BANDWIDTH } });
    // The client would keep the connection as long as the server's Keep-Alive hint (72 s) allows.
    const agent = new Agent({ keepAliveTimeout: 600_000, keepAliveMaxTimeout: 600_000 });
    try {
      const { rec, body } = await streamOne(stack, 500_000, agent);
      const report = await stack.gateway.drain({ drainDelayMs: 0, shutdownTimeoutMs: 20_000 });
      const whole = await body;
      assert.ok(Buffer.isBuffer(whole), String(whole));
      assert.equal(sha256(whole), rec.sha256);
      // Not finished by the timeout (which would have found the idle connection open and cut it).
      assert.deepEqual(report, { cut: 0, hurried: false });
    } finally {
      await stack.close();
      await agent.close();
    }
  });

  it('a hurry ends both waits and cuts what is in flight, leaving no final file', {
    timeout: 60_000,
  }, async () => {
    const stack = await startStack({ emulator: { bandwidth: BANDWIDTH } });
    const agent = new Agent();
    try {
      const { rec, body } = await streamOne(stack, 2_000_000, agent);
      const hurry = new AbortController();
      const draining = stack.gateway.drain({
        drainDelayMs: 60_000,
        shutdownTimeoutMs: 60_000,
        hurry: hurry.signal,
      });
      const ready = await request(`${stack.url}/readyz`, { dispatcher: agent });
      assert.equal(ready.statusCode, 503);
      assert.equal(
        ((await ready.body.json()) as { error: { code: string } }).error.code,
        'RECGATE_SHUTTING_DOWN',
      );
      assert.equal(ready.headers.connection, 'close');
      hurry.abort();
      assert.deepEqual(await draining, { cut: 1, hurried: true });
      const cut = await body;
      assert.ok(cut instanceof Error, 'a cut body must fail, not end');
      const files = await callFiles(path.join(stack.dataDir, 'recordings'), rec.call_sid);
      assert.ok(!files.includes(`${rec.call_sid}.mp3`), files.join(' '));
      assert.ok(
        files.some((n) => n.endsWith('.part')),
        files.join(' '),
      );
    } finally {
      await stack.close();
      await agent.close();
    }
  });
});
