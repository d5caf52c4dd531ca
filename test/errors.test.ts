import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createError, ERRORS, storageError } from '../src/errors.js';

describe('error registry', () => {
  it('documents every code in the README', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    for (const code of Object.keys(ERRORS))
      assert.ok(readme.includes(`\`${code}\``), `${code} missing from README`);
  });

  it('gives every code the RECGATE_ prefix and an HTTP error status', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      assert.match(code, /^RECGATE_[A-Z_]+$/);
      assert.ok(spec.status >= 400 && spec.status < 600, code);
    }
  });

  it('serialises to the contract body without the cause', () => {
    const err = createError('RECGATE_NOT_FOUND', { cause: new Error('SELECT * FROM secret') });
    assert.deepEqual(JSON.parse(JSON.stringify(err)), {
      error: { code: 'RECGATE_NOT_FOUND', message: ERRORS.RECGATE_NOT_FOUND.message },
    });
    assert.ok(err instanceof Error && err.stack);
  });

  it('gives Retry-After to every code whose README row promises it, and lets an error name its own', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const promised = [...readme.matchAll(/^\| `(RECGATE_[A-Z_]+)` \|.*Retry-After.*$/gm)].map((m) => m[1]!);
    assert.ok(promised.includes('RECGATE_RECORDING_NOT_READY'), promised.join(', '));
    for (const code of Object.keys(ERRORS) as Array<keyof typeof ERRORS>) {
      const header = createError(code).headers['retry-after'];
      if (promised.includes(code)) assert.match(String(header), /^[1-9]\d*$/, code);
      else assert.equal(header, undefined, code);
    }
    const named = createError('RECGATE_RECORDING_NOT_READY', { headers: { 'retry-after': '30' } });
    assert.equal(named.headers['retry-after'], '30');
  });

  it('maps ENOSPC and EDQUOT to RECGATE_STORAGE_FULL', () => {
    const enospc = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    assert.equal(storageError(enospc).code, 'RECGATE_STORAGE_FULL');
    assert.equal(storageError(Object.assign(new Error('q'), { code: 'EDQUOT' })).statusCode, 507);
    assert.equal(storageError(Object.assign(new Error('io'), { code: 'EIO' })).code, 'RECGATE_STORAGE_ERROR');
  });
});
