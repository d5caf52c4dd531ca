/** Starts a Twilio emulator and a gateway on port 0 against it, in a fresh temporary data dir. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { getExpectedTwilioSignature } from 'twilio/lib/webhooks/webhooks.js';
import { request } from 'undici';
import { JwtAuth } from '../../src/auth/jwt.js';
import type { CallUpsert } from '../../src/call-log/call-log.js';
import { type ConfigInput, loadConfig } from '../../src/config/config.js';
import { type Emulator, type EmulatorOptions, startEmulator } from '../../src/emulator/index.js';
import { type Gateway, type GatewayOptions, startGateway } from '../../src/server.js';

export const JWT_SECRET = 'test-secret-'.padEnd(48, 'x');
export const ADMIN_TOKEN = 'admin-token-for-tests';

export interface Stack {
  emulator: Emulator;
  gateway: Gateway;
  url: string;
  dataDir: string;
  token(businessId: string, ttlS?: number): Promise<string>;
  register(call: CallUpsert): Promise<void>;
  /**
   * Posts Twilio's recording-status callback with `params`, signed with the emulator's auth token as
   * Twilio signs it; resolves to the status the gateway answered.
   */
  recordingStatus(params: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export async function startStack(
  options: {
    emulator?: EmulatorOptions;
    /** An emulator already running, shared with another stack: used as is, and not closed with this one. */
    sharedEmulator?: Emulator;
    config?: Partial<ConfigInput>;
    dataDir?: string;
    logger?: Logger;
    /** The Twilio client's timeouts and retry policy (see {@link GatewayOptions.upstream}). */
    upstream?: GatewayOptions['upstream'];
  } = {},
): Promise<Stack> {
  const emulator =
    options.sharedEmulator ?? (await startEmulator({ port: 0, logger: false, ...options.emulator }));
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'recgate-test-')));
  const config = loadConfig(
    {
      port: 0,
      dataDir,
      jwtSecret: JWT_SECRET,
      adminToken: ADMIN_TOKEN,
      twilioApiBase: emulator.url,
      twilioAccountSid: emulator.accountSid,
      twilioAuthToken: emulator.authToken,
      logLevel: 'silent',
      ...options.config,
    },
    {},
  );
  const gateway = await startGateway(config, {
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.upstream ? { upstream: options.upstream } : {}),
  });
  const jwt = new JwtAuth(JWT_SECRET);
  return {
    emulator,
    gateway,
    url: gateway.url,
    dataDir,
    token: (businessId, ttlS = 600) => jwt.sign(businessId, ttlS),
    register: async (call) => {
      await gateway.callLog.upsert(call);
    },
    recordingStatus: async (params) => {
      const url = `${gateway.url}/webhooks/twilio/recording-status`;
      const res = await request(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'x-twilio-signature': getExpectedTwilioSignature(emulator.authToken, url, params),
        },
        body: new URLSearchParams(params).toString(),
      });
      await res.body.dump();
      return res.statusCode;
    },
    close: async () => {
      await gateway.close();
      if (!options.sharedEmulator) await emulator.close();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
