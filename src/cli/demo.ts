import type { CallLog } from '../call-log/call-log.js';
import type { DemoCall } from '../emulator/index.js';
import { parseCallSid, parseRecordingSid } from '../sid.js';

/** Registers the emulator's demo calls in the call log, as a CRM would from Twilio's callbacks. */
export async function registerDemoCalls(callLog: Pick<CallLog, 'upsert'>, calls: DemoCall[]): Promise<void> {
  for (const c of calls) {
    await callLog.upsert({
      businessId: c.businessId,
      callSid: parseCallSid(c.callSid),
      parentCallSid: c.parentCallSid === null ? null : parseCallSid(c.parentCallSid),
      // As a CRM logs it from the recording webhook; a processing recording is found by lookup later.
      recordingSid:
        c.recordingSid && c.scenario !== 'processing' ? parseRecordingSid(c.recordingSid) : undefined,
      direction: c.direction,
      from: c.from,
      to: c.to,
      startedAt: c.startedAt,
      durationS: c.durationS,
    });
  }
}
