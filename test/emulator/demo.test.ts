import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type DemoCall, type Emulator, seedDemo } from '../../src/emulator/index.js';
import { api, start } from './helpers.js';

describe('seedDemo', () => {
  let emulator: Emulator;
  let calls: DemoCall[];
  before(async () => {
    emulator = await start();
    calls = await seedDemo(emulator);
  });
  after(() => emulator.close());

  it('seeds a dozen calls for each of two businesses under fixed SIDs', async () => {
    for (const business of ['acme', 'globex']) {
      assert.equal(calls.filter((c) => c.businessId === business).length, 12, business);
    }
    assert.equal(new Set(calls.map((c) => c.callSid)).size, 24);
    const again = await start();
    try {
      const second = await seedDemo(again);
      assert.deepEqual(
        second.map((c) => [c.callSid, c.recordingSid, c.parentCallSid]),
        calls.map((c) => [c.callSid, c.recordingSid, c.parentCallSid]),
      );
    } finally {
      await again.close();
    }
  });

  it('covers <Dial> pairs, processing, deleted, long and ordinary recordings', async () => {
    const children = calls.filter((c) => c.scenario === 'dial-child');
    assert.ok(children.length >= 4);
    for (const child of children) {
      assert.equal(child.recordingSid, null);
      assert.equal(child.direction, 'outbound-dial');
      const parent = calls.find((c) => c.callSid === child.parentCallSid)!;
      assert.equal(parent.scenario, 'dial-parent');
      assert.equal(parent.businessId, child.businessId);
      const upstream = (await (await api(emulator, `Calls/${child.callSid}.json`)).json()) as Record<
        string,
        unknown
      >;
      assert.equal(upstream.parent_call_sid, parent.callSid);
      const list = (await (await api(emulator, `Calls/${parent.callSid}/Recordings.json`)).json()) as {
        recordings: Array<{ sid: string }>;
      };
      assert.deepEqual(
        list.recordings.map((r) => r.sid),
        [parent.recordingSid],
      );
    }
    const processing = calls.find((c) => c.scenario === 'processing')!;
    const meta = (await (await api(emulator, `Recordings/${processing.recordingSid}.json`)).json()) as {
      status: string;
    };
    assert.equal(meta.status, 'processing');
    const deleted = calls.find((c) => c.scenario === 'deleted')!;
    assert.equal((await api(emulator, `Recordings/${deleted.recordingSid}.json`)).status, 404);
    const long = calls.find((c) => c.scenario === 'long')!;
    assert.ok(long.durationS >= 3600);
    const head = await api(emulator, `Recordings/${long.recordingSid}.mp3`, { method: 'HEAD' });
    assert.ok(Number(head.headers.get('content-length')) > 14_000_000);
    for (const call of calls.filter((c) => c.scenario === 'recorded')) {
      assert.ok(call.durationS >= 20 && call.durationS <= 300, `${call.durationS}`);
      assert.ok(!Number.isNaN(Date.parse(call.startedAt)));
      const res = await api(emulator, `Recordings/${call.recordingSid}.json`);
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { call_sid: string }).call_sid, call.callSid);
    }
  });

  it('runs through startEmulator({demo: true})', async () => {
    const demo = await start({ demo: true });
    try {
      const list = (await (await api(demo, 'Calls.json?PageSize=1000')).json()) as { calls: unknown[] };
      assert.equal(list.calls.length, 24);
      assert.equal(demo.demoCalls.length, 24);
    } finally {
      await demo.close();
    }
  });
});
