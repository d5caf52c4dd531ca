import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { AdmissionEvent } from '../../src/recordings/admission/admission.js';
import { LocalAdmission } from '../../src/recordings/admission/local.js';
import { admissionContractTests } from './admission-contract.js';

admissionContractTests('LocalAdmission', async (t, settings) => {
  const admission = new LocalAdmission(settings);
  t.after(() => admission.close());
  return admission;
});

it('LocalAdmission reports grants, waits, refusals and counts', async () => {
  const events: AdmissionEvent[] = [];
  const admission = new LocalAdmission({
    concurrency: 1,
    maxQueue: 1,
    timeoutMs: 10_000,
    onEvent: (e) => events.push(e),
  });
  const held = await admission.acquire('a');
  const waiting = admission.acquire('a');
  await assert.rejects(admission.acquire('a'));
  held.release();
  (await waiting).release();
  const kinds = events.map((e) => (e.kind === 'changed' ? `${e.active}/${e.queued}` : e.kind));
  assert.deepEqual(kinds, ['1/0', 'granted', '1/1', 'rejected', '1/0', 'granted', '1/0', '0/0']);
  assert.ok(events.some((e) => e.kind === 'rejected' && e.reason === 'queue_full'));
  assert.throws(() => new LocalAdmission({ concurrency: 0, maxQueue: 1, timeoutMs: 1 }), /concurrency/);
});
