/**
 * The serving conformance table (test/serving/conformance-cases.ts), run against the real download
 * endpoint: each fixture is a cached recording of a registered call, requested over HTTP with a JWT.
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { storeRecording } from '../helpers/recordings.js';
import { type Stack, startStack } from '../helpers/stack.js';
import {
  CONFORMANCE_CASES,
  type ConformanceFixture,
  checkConformance,
  FIXTURES,
  type FixtureName,
  resolveHeaders,
} from '../serving/conformance-cases.js';

const hex = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 32);

describe('conformance table through GET/HEAD /api/calls/{sid}/download', () => {
  let stack: Stack;
  let token: string;
  const served = new Map<FixtureName, { callSid: string; etag: string; lastModified: string }>();

  before(async () => {
    stack = await startStack();
    token = await stack.token('acme');
    const dir = path.join(stack.dataDir, 'recordings');
    await mkdir(dir, { recursive: true });
    for (const fixture of Object.values(FIXTURES) as ConformanceFixture[]) {
      const callSid = `CA${hex(`call:${fixture.name}`)}` as CallSid;
      const recordingSid = `RE${hex(`rec:${fixture.name}`)}` as RecordingSid;
      await storeRecording(dir, callSid, recordingSid, fixture.body, fixture.lastModified);
      await stack.register({ businessId: 'acme', callSid, recordingSid });
      const head = await request(`${stack.url}/api/calls/${callSid}/download`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${token}` },
      });
      await head.body.dump();
      if (head.statusCode !== 200)
        throw new Error(`fixture ${fixture.name}: HEAD answered ${head.statusCode}`);
      served.set(fixture.name, {
        callSid,
        etag: String(head.headers.etag),
        lastModified: String(head.headers['last-modified']),
      });
    }
  });
  after(() => stack?.close());

  for (const c of CONFORMANCE_CASES) {
    test(`${c.source}: ${c.method} ${c.name}${c.differs ? ' [differs]' : ''}`, async () => {
      const fixture = FIXTURES[c.fixture];
      const target = served.get(c.fixture)!;
      const headers = { ...resolveHeaders(c, target), authorization: `Bearer ${token}` };
      const res = await request(`${stack.url}/api/calls/${target.callSid}/download`, {
        method: c.method,
        headers,
      });
      const body = Buffer.from(await res.body.arrayBuffer());
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k.toLowerCase()] = String(v);
      checkConformance(c, fixture.body, { status: res.statusCode, headers: out, body });
    });
  }
});
