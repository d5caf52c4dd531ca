import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PlaybackSigner } from '../../src/auth/playback-url.js';
import { isRecgateError } from '../../src/errors.js';
import type { CallSid } from '../../src/sid.js';

const A = `CA${'a'.repeat(32)}` as CallSid;
const B = `CA${'b'.repeat(32)}` as CallSid;

function is401(fn: () => unknown) {
  assert.throws(fn, (err: unknown) => isRecgateError(err) && err.code === 'RECGATE_UNAUTHENTICATED');
}

describe('PlaybackSigner', () => {
  const signer = new PlaybackSigner('s'.repeat(40));
  const future = new Date(Date.now() + 60_000);

  it('verifies what it signed', () => {
    const p = signer.sign('acme', A, future);
    assert.deepEqual(signer.verify(A, p), { businessId: 'acme' });
  });

  it('is bound to the variant: a URL for one rendition opens no other', () => {
    const dual = signer.sign('acme', A, future, { channels: 2, format: 'mp3' });
    assert.deepEqual(signer.verify(A, { ...dual, channels: '2' }), { businessId: 'acme' });
    is401(() => signer.verify(A, dual));
    is401(() => signer.verify(A, { ...dual, channels: '2', format: 'wav' }));
    const canonical = signer.sign('acme', A, future);
    is401(() => signer.verify(A, { ...canonical, format: 'wav' }));
    // The canonical variant, named or not, signs as before variants existed.
    assert.deepEqual(signer.verify(A, { ...canonical, channels: '1', format: 'mp3' }), {
      businessId: 'acme',
    });
    assert.deepEqual(signer.sign('acme', A, future, { channels: 1, format: 'mp3' }), canonical);
  });

  it('is bound to the call', () => {
    is401(() => signer.verify(B, signer.sign('acme', A, future)));
  });

  it('is bound to the business', () => {
    const p = signer.sign('acme', A, future);
    is401(() => signer.verify(A, { ...p, bid: 'globex' }));
  });

  it('is bound to the expiry', () => {
    const p = signer.sign('acme', A, future);
    is401(() => signer.verify(A, { ...p, exp: String(Number(p.exp) + 3600) }));
  });

  it('expires', () => {
    const p = signer.sign('acme', A, future);
    is401(() => signer.verify(A, p, future.getTime() + 1000));
  });

  it('rejects another secret', () => {
    const p = new PlaybackSigner('t'.repeat(40)).sign('acme', A, future);
    is401(() => signer.verify(A, p));
  });

  it('accepts only the spelling it issued (no leading zeros, no respelled padding bits)', () => {
    const p = signer.sign('acme', A, future);
    is401(() => signer.verify(A, { ...p, exp: `0${p.exp}` }));
    const base = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = p.sig.at(-1)!;
    const group = Math.floor(base.indexOf(last) / 4) * 4;
    for (const c of base.slice(group, group + 4)) {
      if (c !== last) is401(() => signer.verify(A, { ...p, sig: `${p.sig.slice(0, -1)}${c}` }));
    }
  });

  it('rejects missing, malformed and array-valued parameters', () => {
    const p = signer.sign('acme', A, future);
    is401(() => signer.verify(A, {}));
    is401(() => signer.verify(A, { ...p, sig: undefined }));
    is401(() => signer.verify(A, { ...p, sig: [p.sig, p.sig] }));
    is401(() => signer.verify(A, { ...p, sig: `${p.sig}A` }));
    is401(() => signer.verify(A, { ...p, exp: '1e99' }));
    is401(() => signer.verify(A, { ...p, bid: '../x' }));
  });
});
