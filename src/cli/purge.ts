/**
 * `recgate purge --call CA…`: what `DELETE /api/admin/calls/{callSid}/recording` does (see
 * `resolution/purge.ts`), run against the data dir and database of the configuration: the call and every
 * call playing the same recording are marked purged, then the local copy is removed under the recording's
 * download lock. Gateways on the same data dir refuse later plays (410 RECGATE_RECORDING_PURGED).
 *
 * Prints what was removed and how many calls were marked. Exit 0; 1 for a call the call log does not know
 * (named) or another failure; 2 for bad usage.
 */
import type { ConfigInput } from '../config/config.js';
import { isRecgateError } from '../errors.js';
import { purgeRecording } from '../resolution/purge.js';
import type { CallSid } from '../sid.js';
import { adminConfig, type CommandIo, EXIT_FAILED, EXIT_OK, messageOf, openAdmin } from './admin.js';
import { formatBytes } from './doctor.js';

export async function runPurge(
  callSid: CallSid,
  flags: ConfigInput,
  io: CommandIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let admin: Awaited<ReturnType<typeof openAdmin>>;
  try {
    admin = await openAdmin(adminConfig(flags, env), { cache: true, upstream: false }, env);
  } catch (err) {
    io.err(`recgate purge: ${messageOf(err)}`);
    return EXIT_FAILED;
  }
  try {
    const cache = admin.runtime!.cache;
    const result = await purgeRecording({ callLog: admin.callLog, state: admin.state, cache }, callSid, {
      log: admin.logger,
    });
    const owner = result.owner === callSid ? '' : ` (the file of its parent ${result.owner})`;
    io.out(
      result.removedBytes > 0
        ? `removed ${formatBytes(result.removedBytes)} (${result.removedBytes} bytes) of ${
            result.recordingSid ?? 'the recording'
          }${owner}`
        : `removed nothing: no local copy of ${result.recordingSid ?? "the call's recording"}${owner}`,
    );
    io.out(`marked ${result.marked} call${result.marked === 1 ? '' : 's'} purged`);
    return EXIT_OK;
  } catch (err) {
    if (isRecgateError(err) && err.code === 'RECGATE_NOT_FOUND') {
      io.err(`recgate purge: no call ${callSid} in the call log`);
    } else {
      io.err(`recgate purge: ${callSid}: ${messageOf(err)}`);
    }
    return EXIT_FAILED;
  } finally {
    await admin.close();
  }
}
