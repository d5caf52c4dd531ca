/**
 * Demo data: two businesses' calls with every recording situation the gateway must handle, under fixed
 * SIDs, so a demo, a screenshot or a bug report always names the same calls.
 */
import type { Emulator } from './index.js';
import { type CallDirection, hex32 } from './state.js';

export type DemoScenario =
  /** A plain call with its own completed recording. */
  | 'recorded'
  /** The caller's leg of a `<Dial>`: the recording sits on this call. */
  | 'dial-parent'
  /** The agent's leg of a `<Dial>`: no recording of its own, its parent's plays. */
  | 'dial-child'
  /** The recording is still processing upstream and completes about 20 s after seeding. */
  | 'processing'
  /** The recording was deleted upstream. */
  | 'deleted'
  /** A recording over an hour long (about 15 MB). */
  | 'long'
  /** The call was never recorded. */
  | 'no-recording';

/** One call for the gateway's call log (its admin API's `PUT /api/admin/calls/{callSid}` body and more). */
export interface DemoCall {
  businessId: string;
  callSid: string;
  parentCallSid: string | null;
  /** The call's own recording; `null` for a `<Dial>` child (its parent's plays) and unrecorded calls. */
  recordingSid: string | null;
  direction: CallDirection;
  from: string;
  to: string;
  /** ISO 8601. */
  startedAt: string;
  durationS: number;
  scenario: DemoScenario;
}

interface Plan {
  scenario: Exclude<DemoScenario, 'dial-child'>;
  durationS: number;
  direction?: 'inbound' | 'outbound-api';
  hoursAgo: number;
}

const BUSINESSES: ReadonlyArray<{ id: string; number: string; plans: Plan[] }> = [
  {
    id: 'acme',
    number: '+14155550100',
    plans: [
      { scenario: 'recorded', durationS: 47, hoursAgo: 0.5 },
      { scenario: 'dial-parent', durationS: 185, hoursAgo: 1.2 },
      { scenario: 'processing', durationS: 64, hoursAgo: 0.1 },
      { scenario: 'recorded', durationS: 22, direction: 'outbound-api', hoursAgo: 3 },
      { scenario: 'long', durationS: 3725, hoursAgo: 5 },
      { scenario: 'dial-parent', durationS: 96, hoursAgo: 8 },
      { scenario: 'deleted', durationS: 130, hoursAgo: 26 },
      { scenario: 'recorded', durationS: 298, hoursAgo: 30 },
      { scenario: 'no-recording', durationS: 35, hoursAgo: 50 },
      { scenario: 'recorded', durationS: 71, direction: 'outbound-api', hoursAgo: 70 },
    ],
  },
  {
    id: 'globex',
    number: '+12125550199',
    plans: [
      { scenario: 'dial-parent', durationS: 142, hoursAgo: 0.3 },
      { scenario: 'recorded', durationS: 38, hoursAgo: 0.9 },
      { scenario: 'processing', durationS: 51, hoursAgo: 0.05 },
      { scenario: 'recorded', durationS: 240, direction: 'outbound-api', hoursAgo: 4 },
      { scenario: 'dial-parent', durationS: 77, hoursAgo: 9 },
      { scenario: 'long', durationS: 3910, hoursAgo: 20 },
      { scenario: 'deleted', durationS: 58, hoursAgo: 28 },
      { scenario: 'recorded', durationS: 20, hoursAgo: 44 },
      { scenario: 'no-recording', durationS: 12, direction: 'outbound-api', hoursAgo: 60 },
      { scenario: 'recorded', durationS: 163, hoursAgo: 90 },
    ],
  },
];

/** Milliseconds after seeding at which the `processing` recordings complete. */
export const DEMO_PROCESSING_MS = 20_000;

/**
 * Creates the demo calls and recordings in `emulator` (twelve calls per business: `acme` and `globex`)
 * and returns them newest first per business. SIDs are fixed; start times are relative to now.
 * Seeding twice into one emulator fails (the recording SIDs exist).
 */
export async function seedDemo(emulator: Emulator): Promise<DemoCall[]> {
  const now = Math.floor(Date.now() / 1000) * 1000;
  const calls: DemoCall[] = [];
  for (const business of BUSINESSES) {
    for (const [index, plan] of business.plans.entries()) {
      const sid = (kind: string) => hex32(`recgate-demo:${business.id}:${index}:${kind}`);
      const callSid = `CA${sid('call')}`;
      const inbound = (plan.direction ?? 'inbound') === 'inbound';
      const customer = `+1${String(200 + (Number.parseInt(sid('customer').slice(0, 6), 16) % 700))}555${String(
        100 + index,
      ).padStart(4, '0')}`;
      const startTime = new Date(now - Math.round(plan.hoursAgo * 3_600_000) - plan.durationS * 1000);
      const from = inbound ? customer : business.number;
      const to = inbound ? business.number : customer;
      if (plan.scenario === 'dial-parent') {
        const childSid = `CA${sid('child')}`;
        // The caller's leg first, so it keeps the caller's and the business's numbers.
        await emulator.createRecording({
          call_sid: callSid,
          status: 'absent',
          duration_s: plan.durationS + 4,
          from,
          to,
          start_time: startTime.toISOString(),
        });
        const created = await emulator.createRecording({
          call_sid: childSid,
          parent_call_sid: callSid,
          recording_sid: `RE${sid('recording')}`,
          // Recorded as `<Dial record="record-from-answer-dual">`: each leg on its own channel.
          channels: 2,
          duration_s: plan.durationS,
          to: `+1415555${String(150 + index).padStart(4, '0')}`,
          start_time: startTime.toISOString(),
        });
        calls.push({
          businessId: business.id,
          callSid,
          parentCallSid: null,
          recordingSid: created.recording_sid,
          direction: 'inbound',
          from,
          to,
          startedAt: startTime.toISOString(),
          durationS: plan.durationS + 4,
          scenario: 'dial-parent',
        });
        calls.push({
          businessId: business.id,
          callSid: childSid,
          parentCallSid: callSid,
          recordingSid: null,
          direction: 'outbound-dial',
          from: created.from,
          to: created.to,
          startedAt: created.start_time,
          durationS: created.duration_s,
          scenario: 'dial-child',
        });
        continue;
      }
      const created = await emulator.createRecording({
        call_sid: callSid,
        duration_s: plan.durationS,
        from,
        to,
        direction: plan.direction ?? 'inbound',
        start_time: startTime.toISOString(),
        ...(plan.scenario === 'no-recording'
          ? { status: 'absent' as const }
          : { recording_sid: `RE${sid('recording')}` }),
        ...(plan.scenario === 'processing'
          ? { status: 'processing' as const, ready_after_ms: DEMO_PROCESSING_MS }
          : {}),
        ...(plan.scenario === 'deleted' ? { status: 'deleted' as const } : {}),
      });
      calls.push({
        businessId: business.id,
        callSid,
        parentCallSid: null,
        recordingSid: created.recording_sid,
        direction: created.direction,
        from,
        to,
        startedAt: created.start_time,
        durationS: created.duration_s,
        scenario: plan.scenario,
      });
    }
  }
  return calls.sort(
    (a, b) => a.businessId.localeCompare(b.businessId) || b.startedAt.localeCompare(a.startedAt),
  );
}
