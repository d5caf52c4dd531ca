import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';

export const ACCOUNT_SID = `AC${'a'.repeat(32)}`;
export const AUTH_TOKEN = 'stub-auth-token-0123456789';
export const CALL_SID = `CA${'1'.repeat(32)}`;
export const RECORDING_SID = `RE${'2'.repeat(32)}`;

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface StubServer {
  url: string;
  requests: SeenRequest[];
  close(): Promise<void>;
}

/** A plain node:http server on port 0 that records every request it sees. */
export async function startStub(
  handler: (req: IncomingMessage, res: ServerResponse, seen: SeenRequest[]) => void,
): Promise<StubServer> {
  const requests: SeenRequest[] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res, requests);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

export function twilioNotFound(res: ServerResponse): void {
  json(res, 404, {
    code: 20404,
    message: 'The requested resource was not found',
    more_info: 'https://www.twilio.com/docs/errors/20404',
    status: 404,
  });
}

export function recordingJson(
  status = 'completed',
  sid = RECORDING_SID,
  callSid = CALL_SID,
): Record<string, unknown> {
  return {
    account_sid: ACCOUNT_SID,
    call_sid: callSid,
    sid,
    status,
    duration: '42',
    date_created: 'Tue, 02 Jan 2024 10:00:00 +0000',
    uri: `/2010-04-01/Accounts/${ACCOUNT_SID}/Recordings/${sid}.json`,
  };
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Deterministic bytes standing in for an MP3. */
export function mediaBytes(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) % 251;
  return buf;
}

export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

export { isCode } from '../helpers/common.js';
