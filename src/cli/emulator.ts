import { seedDemo, startEmulator } from '../emulator/index.js';
import { createLogger } from '../observability/logger.js';

export interface EmulatorCommandOptions {
  host: string;
  port: number;
  accountSid?: string;
  authToken?: string;
  ttfbMs: number;
  bandwidth: number;
  range: boolean;
  demo?: boolean;
}

export async function runEmulatorCommand(opts: EmulatorCommandOptions): Promise<void> {
  const logger = createLogger();
  const emulator = await startEmulator({
    host: opts.host,
    port: opts.port,
    accountSid: opts.accountSid,
    authToken: opts.authToken,
    ttfbMs: opts.ttfbMs,
    bandwidth: opts.bandwidth,
    rangeSupport: opts.range,
    logger,
  });
  if (opts.demo) await seedDemo(emulator);
  process.stdout.write(
    `recgate emulator on ${emulator.url}\n  TWILIO_API_BASE=${emulator.url}\n  TWILIO_ACCOUNT_SID=${emulator.accountSid}\n  TWILIO_AUTH_TOKEN=${emulator.authToken}\n`,
  );
  const stop = () => {
    emulator.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
