/**
 * Keep-alive idle timeout: a connection left idle after its responses is closed by the gateway after
 * `idleTimeoutMs` (Node's keepAliveTimeout), quietly (no 408, no bytes after the last response), and the
 * gateway advertises that timeout in `Keep-Alive`. Observed through the socket's own events with a short
 * configured timeout; no time is measured, so a loaded machine cannot fail it (a deadline twenty times the
 * timeout only names a connection that is never closed).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Stack, startStack } from '../helpers/stack.js';

const IDLE_TIMEOUT_MS = 1000;
const NEVER_CLOSED_MS = 20 * IDLE_TIMEOUT_MS;

/** The responses in `raw`, in order: status line and headers (lowercased names) of each. */
function responses(raw: string): Array<{ status: string; headers: Map<string, string> }> {
  const out: Array<{ status: string; headers: Map<string, string> }> = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    assert.ok(end >= 0, `an unfinished response head: ${JSON.stringify(rest.slice(0, 200))}`);
    const [status, ...lines] = rest.slice(0, end).split('\r\n');
    const headers = new Map(
      lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
    );
    const length = Number(headers.get('content-length') ?? 0);
    out.push({ status: status!, headers });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

describe('keep-alive idle timeout', { timeout: 30_000 }, () => {
  let stack: Stack;

  before(async () => {
    stack = await startStack({ config: { idleTimeoutMs: IDLE_TIMEOUT_MS } });
  });
  after(() => stack?.close());

  it('keeps a connection open for its requests, then closes it once idle, quietly', async () => {
    const socket = connect(Number(new URL(stack.url).port), '127.0.0.1');
    await once(socket, 'connect');
    let raw = '';
    let endedByServer = false;
    socket.on('data', (chunk: Buffer) => {
      raw += chunk.toString('latin1');
    });
    socket.on('end', () => {
      endedByServer = true;
    });
    const closed = once(socket, 'close');
    // Two requests at once: the second is served on the same connection without any idle gap before it,
    // so only the idle time after its response can end the connection.
    const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n';
    socket.write(head + head);
    // A generous deadline only turns "never closed" into a clear failure; it measures nothing.
    const [hadError] = (await Promise.race([
      closed,
      sleep(NEVER_CLOSED_MS, undefined, { ref: false }).then(() => {
        socket.destroy();
        throw new Error(
          `the idle connection was still open ${NEVER_CLOSED_MS} ms after its requests (idle timeout ${IDLE_TIMEOUT_MS} ms); received: ${raw}`,
        );
      }),
    ])) as [boolean];

    assert.equal(hadError, false, 'closed cleanly, not reset');
    assert.equal(endedByServer, true, 'the server ended the connection (we never did)');
    const answers = responses(raw);
    assert.equal(answers.length, 2, `both requests answered on the one connection, nothing after: ${raw}`);
    for (const answer of answers) {
      assert.match(answer.status, /^HTTP\/1\.1 200 /);
      assert.notEqual(answer.headers.get('connection'), 'close', 'the response kept the connection open');
      assert.equal(answer.headers.get('keep-alive'), `timeout=${IDLE_TIMEOUT_MS / 1000}`);
    }
    const open = await new Promise<number>((resolve, reject) =>
      stack.gateway.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    );
    assert.equal(open, 0, 'the gateway holds no connection');
  });
});
