/**
 * The send timeout (issue 11, item 2): a client that stops reading is cut, which frees its descriptor and
 * its place as a reader of the download, while another reader of the same download completes; a paused
 * `<audio>` player that was cut reopens with a Range request and gets the rest; a slow client that keeps
 * reading is never cut.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { getMetrics } from '../../src/observability/metrics.js';
import type { CallSid } from '../../src/sid.js';
import { sha256 } from '../helpers/common.js';
import { fdTargets } from '../helpers/procfs.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Larger than what the kernel takes from a server for a client that reads nothing (about 3.9 MB on Linux
 * loopback, the send buffer's autotuned maximum plus the receiver's window): below that, the whole body
 * goes into socket buffers and no write ever waits.
 */
const SIZE = 6_000_000;
const SEND_TIMEOUT_MS = 1000;
/** How long a test waits for a cut that must come, whatever the machine's load. */
const CUT_WAIT_MS = 15_000;

async function sendTimeouts(): Promise<number> {
  const metric = await getMetrics().connectionsCut.get();
  return metric.values.find((v) => v.labels.reason === 'send_timeout')?.value ?? 0;
}

/** Descriptors of this process open on files under `dir` (the recordings the download reads and writes). */
function filesOpenUnder(dir: string): number {
  return fdTargets('self').filter((target) => target.startsWith(dir)).length;
}

function connections(stack: Stack): Promise<number> {
  return new Promise((resolve, reject) =>
    stack.gateway.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
}

/** A raw client that sends a GET and then reads nothing until told to. */
function stalledClient(url: string, path: string, headers: Record<string, string> = {}) {
  const { hostname, port } = new URL(url);
  const socket: Socket = connect(Number(port), hostname);
  socket.pause();
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: ${hostname}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  /** Resumes reading and resolves with everything the server sent before the connection ended. */
  const drain = () =>
    new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.once('close', () => resolve(Buffer.concat(chunks)));
      socket.resume();
    });
  return { socket, drain };
}

/** Splits a raw HTTP/1.1 response (not chunked) into its status, headers and body. */
function parseRaw(raw: Buffer): { status: number; headers: Record<string, string>; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body: raw.subarray(end + 4) };
}

describe('send timeout', { timeout: 90_000 }, () => {
  let stack: Stack;
  let token: string;

  before(async () => {
    // 6 MB at 20 MB/s: a download of a third of a second, during which one reader stalls.
    stack = await startStack({
      emulator: { bandwidth: 20_000_000 },
      config: { sendTimeoutMs: SEND_TIMEOUT_MS },
    });
    token = await stack.token('acme');
  });
  after(() => stack?.close());

  async function coldCall(bytes = SIZE) {
    const rec = await stack.emulator.createRecording({ bytes });
    await stack.register({
      businessId: 'acme',
      callSid: rec.call_sid as CallSid,
      startedAt: new Date().toISOString(),
    });
    const res = await request(`${stack.url}/api/calls/${rec.call_sid}/playback-url`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      reset: true,
    });
    assert.equal(res.statusCode, 200);
    const { url } = (await res.body.json()) as { url: string };
    return { ...rec, path: new URL(url).pathname + new URL(url).search };
  }

  it('cuts a stalled reader of a cold download while another reader of it completes', async () => {
    const call = await coldCall();
    const cutBefore = await sendTimeouts();
    const stalled = stalledClient(stack.url, call.path);
    const reading = request(`${stack.url}${call.path}`, { reset: true }).then(async (res) => ({
      status: res.statusCode,
      body: Buffer.from(await res.body.arrayBuffer()),
    }));
    const whole = await reading;
    assert.equal(whole.status, 200);
    assert.equal(sha256(whole.body), call.sha256);
    // The stalled one is cut once its socket buffers are full and the timeout passed with no progress.
    for (let i = 0; (await sendTimeouts()) === cutBefore; i++) {
      assert.ok(i < CUT_WAIT_MS / 25, 'the stalled reader was never cut');
      await sleep(25);
    }
    const got = parseRaw(await stalled.drain());
    assert.equal(got.status, 200);
    assert.ok(got.body.length < SIZE, `the stalled reader got ${got.body.length} of ${SIZE} bytes`);
    // Its socket is closed, and the download's file handles too: the flight has no reader left.
    for (
      let i = 0;
      (await connections(stack)) > 0 || filesOpenUnder(path.join(stack.dataDir, 'recordings')) > 0;
      i++
    ) {
      assert.ok(
        i < CUT_WAIT_MS / 25,
        `still open: ${await connections(stack)} connections, ${filesOpenUnder(path.join(stack.dataDir, 'recordings'))} files`,
      );
      await sleep(25);
    }
  });

  it('serves the rest to a player that was cut and reopens with Range', async () => {
    const call = await coldCall();
    const cutBefore = await sendTimeouts();
    const paused = stalledClient(stack.url, call.path);
    for (let i = 0; (await sendTimeouts()) === cutBefore; i++) {
      assert.ok(i < CUT_WAIT_MS / 25, 'the paused player was never cut');
      await sleep(25);
    }
    const first = parseRaw(await paused.drain());
    assert.equal(first.status, 200);
    const have = first.body.length;
    assert.ok(have > 0 && have < SIZE, `the paused player had ${have} bytes`);
    const rest = await request(`${stack.url}${call.path}`, {
      headers: { range: `bytes=${have}-`, 'if-range': first.headers.etag! },
    });
    assert.equal(rest.statusCode, 206);
    assert.equal(rest.headers['content-range'], `bytes ${have}-${SIZE - 1}/${SIZE}`);
    const tail = Buffer.from(await rest.body.arrayBuffer());
    assert.equal(sha256(Buffer.concat([first.body, tail])), call.sha256);
  });

  it('never cuts a client that keeps reading, even with pauses shorter than the timeout', async () => {
    const call = await coldCall();
    const cutBefore = await sendTimeouts();
    const res = await request(`${stack.url}${call.path}`, { highWaterMark: 64 * 1024 });
    const chunks: Buffer[] = [];
    let sincePause = 0;
    // Slower than the download, so the server waits on this client (its socket buffers full) for most of
    // the body; a 300 ms pause after every megabyte, each close to the 1 s timeout once the machine's
    // scheduling adds its delay. Each chunk the socket takes is progress.
    for await (const chunk of res.body) {
      chunks.push(chunk as Buffer);
      sincePause += (chunk as Buffer).length;
      if (sincePause >= 1_000_000) {
        sincePause = 0;
        await sleep(300);
      }
    }
    assert.equal(sha256(Buffer.concat(chunks)), call.sha256);
    assert.equal(await sendTimeouts(), cutBefore);
  });
});
