/**
 * Clients for the drain tests: cold recordings registered on a gateway, streams that keep reading in the
 * background (so a test can signal the gateway while they run), and probes on connections of their own.
 */
import assert from 'node:assert/strict';
import { type Agent, Client, request } from 'undici';
import type { Emulator } from '../../src/emulator/index.js';
import { sha256 } from './common.js';
import { ADMIN_TOKEN } from './stack.js';

export interface Stream {
  status: number;
  contentLength: number;
  /** Bytes received so far (grows while the stream runs). */
  received: number;
  /** Set once the body ended or failed. */
  result?: { sha: string; error?: string };
}

/** Creates a recording of `bytes` in the emulator and registers its call for business `acme`. */
export async function registerRecording(emulator: Emulator, url: string, bytes: number) {
  const rec = await emulator.createRecording({ bytes });
  const res = await request(`${url}/api/admin/calls/${rec.call_sid}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ business_id: 'acme', recording_sid: rec.recording_sid }),
  });
  assert.equal(res.statusCode, 201);
  await res.body.dump();
  return { ...rec, recording_sid: rec.recording_sid! };
}

/** Starts a GET and resolves once its headers are in; the body keeps flowing into the returned record. */
export async function startStream(
  url: string,
  callSid: string,
  token: string,
  agent: Agent,
): Promise<Stream> {
  const res = await request(`${url}/api/calls/${callSid}/download`, {
    dispatcher: agent,
    headers: { authorization: `Bearer ${token}` },
  });
  const stream: Stream = {
    status: res.statusCode,
    contentLength: Number(res.headers['content-length']),
    received: 0,
  };
  void (async () => {
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of res.body) {
        chunks.push(chunk as Buffer);
        stream.received += (chunk as Buffer).length;
      }
      stream.result = { sha: sha256(Buffer.concat(chunks)) };
    } catch (err) {
      stream.result = { sha: sha256(Buffer.concat(chunks)), error: String(err) };
    }
  })();
  return stream;
}

/** One request on a connection of its own (a new connection, as a load balancer's probe makes). */
export async function fresh(
  url: string,
  pathname: string,
): Promise<{ status: number; body: string; connection: string | undefined }> {
  const client = new Client(url);
  try {
    const res = await client.request({ method: 'GET', path: pathname });
    const connection = res.headers.connection;
    return {
      status: res.statusCode,
      body: await res.body.text(),
      connection: typeof connection === 'string' ? connection : undefined,
    };
  } finally {
    await client.close().catch(() => undefined);
  }
}
