/**
 * The request-size limits and the timeout options themselves (issue 11, item 2): `--body-limit` replaces the
 * old fixed 64 KiB (Twilio's webhook form included) and still answers 413 RECGATE_PAYLOAD_TOO_LARGE, oversized headers get 431
 * RECGATE_HEADERS_TOO_LARGE, and the options are validated where they enter.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { getExpectedTwilioSignature } from 'twilio/lib/webhooks/webhooks.js';
import { request } from 'undici';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { ADMIN_TOKEN, JWT_SECRET, type Stack, startStack } from '../helpers/stack.js';

/** Sends `raw` on a fresh connection and resolves with everything received until the server closes it. */
function exchange(url: string, raw: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    socket.on('data', (c: Buffer) => {
      received += c.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(received));
    socket.write(raw);
  });
}

const CALL_SID = `CA${'2'.repeat(32)}`;
const RECORDING_SID = `RE${'2'.repeat(32)}`;

/** Posts Twilio's recording-status form, signed as Twilio signs it; the status and the error code, if any. */
async function postWebhook(
  stack: Stack,
  params: Record<string, string>,
): Promise<{ status: number; code: string | undefined }> {
  const url = `${stack.url}/webhooks/twilio/recording-status`;
  const res = await request(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      'x-twilio-signature': getExpectedTwilioSignature(stack.emulator.authToken, url, params),
    },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.body.text();
  const code = text === '' ? undefined : (JSON.parse(text) as { error?: { code: string } }).error?.code;
  return { status: res.statusCode, code };
}

describe('request size limits', () => {
  let stack: Stack;

  before(async () => {
    stack = await startStack({ config: { bodyLimitBytes: 200 } });
  });
  after(() => stack?.close());

  it('answers a body over --body-limit with 413 RECGATE_PAYLOAD_TOO_LARGE, and takes one under it', async () => {
    const put = (body: string) =>
      request(`${stack.url}/api/admin/calls/CA${'1'.repeat(32)}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body,
      });
    const small = await put(JSON.stringify({ business_id: 'acme' }));
    assert.equal(small.statusCode, 201);
    await small.body.dump();
    const large = await put(JSON.stringify({ business_id: 'acme', from: 'x'.repeat(300) }));
    assert.equal(large.statusCode, 413);
    assert.equal(
      ((await large.body.json()) as { error: { code: string } }).error.code,
      'RECGATE_PAYLOAD_TOO_LARGE',
    );
  });

  it("holds Twilio's webhook form to --body-limit too", async () => {
    const small = await postWebhook(stack, { CallSid: CALL_SID, RecordingSid: RECORDING_SID });
    assert.equal(small.status, 204, 'a signed report of a call nobody registered changes nothing');
    const large = await postWebhook(stack, {
      CallSid: CALL_SID,
      RecordingSid: RECORDING_SID,
      Padding: 'x'.repeat(300),
    });
    assert.equal(large.status, 413);
    assert.equal(large.code, 'RECGATE_PAYLOAD_TOO_LARGE');
  });

  it('answers oversized headers with 431 RECGATE_HEADERS_TOO_LARGE and closes the connection', async () => {
    const answer = await exchange(
      stack.url,
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 431 /);
    assert.match(answer, /"code":"RECGATE_HEADERS_TOO_LARGE"/);
    assert.match(answer, /\r\nConnection: close\r\n/i);
  });
});

describe('a --body-limit above the default', () => {
  it('takes a webhook form larger than the default 64 KiB', async (t) => {
    const stack = await startStack({ config: { bodyLimitBytes: 256 * 1024 } });
    t.after(() => stack.close());
    const form = { CallSid: CALL_SID, RecordingSid: RECORDING_SID, Padding: 'x'.repeat(100 * 1024) };
    assert.equal((await postWebhook(stack, form)).status, 204);
  });
});

describe('limit options', () => {
  const base = { jwtSecret: JWT_SECRET };

  it('have the documented defaults', () => {
    const c = loadConfig(base, {});
    assert.deepEqual(
      [c.requestTimeoutMs, c.headersTimeoutMs, c.idleTimeoutMs, c.sendTimeoutMs, c.maxConnections],
      [30_000, 10_000, 72_000, 60_000, 10_000],
    );
    assert.deepEqual([c.bodyLimitBytes, c.apiRatePerS, c.apiBurst], [65_536, 200, 1000]);
  });

  it('are read from the environment, flags first', () => {
    const c = loadConfig(
      { ...base, sendTimeoutMs: 5000 },
      {
        RECGATE_SEND_TIMEOUT_MS: '9000',
        RECGATE_IDLE_TIMEOUT_MS: '1000',
        RECGATE_MAX_CONNECTIONS: '0',
        RECGATE_BODY_LIMIT: '1024',
        RECGATE_API_RATE: '0.5',
        RECGATE_API_BURST: '2',
        RECGATE_REQUEST_TIMEOUT_MS: '4000',
        RECGATE_HEADERS_TIMEOUT_MS: '3000',
      },
    );
    assert.deepEqual(
      [c.sendTimeoutMs, c.idleTimeoutMs, c.maxConnections, c.bodyLimitBytes, c.apiRatePerS, c.apiBurst],
      [5000, 1000, 0, 1024, 0.5, 2],
    );
    assert.deepEqual([c.requestTimeoutMs, c.headersTimeoutMs], [4000, 3000]);
  });

  it('refuse bad values, naming the field', () => {
    assert.throws(
      () => loadConfig({ ...base, headersTimeoutMs: 40_000 }, {}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /headers-timeout-ms must not exceed request-timeout-ms/);
        return true;
      },
    );
    assert.throws(() => loadConfig({ ...base, idleTimeoutMs: 0 }, {}), /idle-timeout-ms must be positive/);
    assert.throws(() => loadConfig(base, { RECGATE_API_RATE: '-1' }), /api-rate must be 0 or more/);
    assert.throws(() => loadConfig(base, { RECGATE_BODY_LIMIT: 'lots' }), /body-limit must be a number/);
  });
});
