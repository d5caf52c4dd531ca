import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatHttpDate } from '../../src/serving/conditional.js';
import { serve } from '../../src/serving/serve.js';
import {
  CONFORMANCE_CASES,
  type ConformanceRunner,
  checkConformance,
  FIXTURES,
  resolveHeaders,
} from './conformance-cases.js';
import { memorySource, readAll } from './memory-source.js';

/** Runs a case through serve() with an in-memory source holding the fixture. */
const serveRunner: ConformanceRunner = async (request, fixture) => {
  const source = memorySource(fixture.body, { etag: fixture.etag, lastModified: fixture.lastModified });
  const result = serve(request, source, { contentType: 'application/octet-stream' });
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(result.headers)) headers[name.toLowerCase()] = value;
  return {
    status: result.statusCode,
    headers,
    body: result.stream ? await readAll(result.stream) : Buffer.alloc(0),
  };
};

describe('conformance table through serve()', () => {
  const bySource = new Map<string, typeof CONFORMANCE_CASES>();
  for (const c of CONFORMANCE_CASES) bySource.set(c.source, [...(bySource.get(c.source) ?? []), c]);
  for (const [source, cases] of bySource) {
    describe(source, () => {
      for (const c of cases) {
        test(`${c.method} ${c.name}${c.differs ? ' [differs]' : ''}`, async () => {
          const fixture = FIXTURES[c.fixture];
          const headers = resolveHeaders(c, {
            etag: fixture.etag,
            lastModified: formatHttpDate(fixture.lastModified),
          });
          checkConformance(c, fixture.body, await serveRunner({ method: c.method, headers }, fixture));
        });
      }
    });
  }

  test('the table is well-formed', () => {
    const names = new Set<string>();
    for (const c of CONFORMANCE_CASES) {
      const key = `${c.source}|${c.method}|${c.name}`;
      assert.ok(!names.has(key), `duplicate case ${key}`);
      names.add(key);
      assert.ok(FIXTURES[c.fixture], `unknown fixture ${c.fixture}`);
    }
    assert.ok(CONFORMANCE_CASES.length > 100);
    assert.equal(FIXTURES['apache-byteranges'].body.length, 40001);
    assert.equal(FIXTURES['nginx-t1'].body.length, 1000);
  });
});
