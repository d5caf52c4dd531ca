/** The Upstream contract for TwilioClient, against the emulator (faults and throttle through its API). */
import { after, before, type TestContext } from 'node:test';
import { type Emulator, startEmulator } from '../../src/emulator/index.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { TwilioClient } from '../../src/upstream/twilio-client.js';
import { type MediaSetup, upstreamContractTests } from './contract.js';
import { basicAuth } from './helpers.js';

/** The emulator's page size when the client asks none, as Twilio's. */
const EMULATOR_PAGE_SIZE = 50;

let emulator: Emulator;

before(async () => {
  emulator = await startEmulator({ port: 0, logger: false });
});

after(async () => {
  await emulator.close();
});

function makeClient(t: TestContext): TwilioClient {
  const client = new TwilioClient({
    baseUrl: emulator.url,
    accountSid: emulator.accountSid,
    authToken: emulator.authToken,
    bodyIdleTimeoutMs: 5000,
    retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 10 },
  });
  t.after(() => client.close());
  return client;
}

/** The recording's bytes and headers, read without the client (and before any throttle or fault). */
async function download(sid: RecordingSid) {
  const res = await fetch(
    `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/Recordings/${sid}.mp3`,
    {
      headers: { authorization: basicAuth(emulator.accountSid, emulator.authToken) },
    },
  );
  if (res.status !== 200) throw new Error(`the emulator answered ${res.status}`);
  const header = (name: string) => {
    const value = res.headers.get(name);
    if (value === null) throw new Error(`the emulator sent no ${name}`);
    return value;
  };
  const announced = {
    etag: header('etag'),
    lastModified: header('last-modified'),
    contentType: header('content-type'),
  };
  return { data: Buffer.from(await res.arrayBuffer()), announced };
}

async function serve(t: TestContext, setup: MediaSetup) {
  const created = await emulator.createRecording({ bytes: setup.size });
  const sid = created.recording_sid as RecordingSid;
  const { data, announced } = await download(sid);
  t.after(() => {
    emulator.setThrottle({ ttfbMs: 0, bandwidth: 0, rangeSupport: true });
    emulator.reset();
  });
  emulator.setThrottle({
    ttfbMs: setup.headersDelayMs,
    bandwidth: setup.slowBody ? 200_000 : 0,
    rangeSupport: setup.ranges,
  });
  if (setup.breakAt !== undefined) {
    emulator.addFault({
      recording_sid: sid,
      kind: setup.breakAt.how === 'reset' ? 'reset_mid_body' : 'short_body',
      after_bytes: setup.breakAt.offset,
    });
  }
  return { upstream: makeClient(t), sid, data, announced };
}

upstreamContractTests('TwilioClient against the emulator', {
  media: serve,
  variants: async (t) => {
    const dual = await emulator.createRecording({ bytes: 6000, channels: 2 });
    const mono = await emulator.createRecording({ bytes: 6000 });
    return {
      upstream: makeClient(t),
      dual: dual.recording_sid as RecordingSid,
      mono: mono.recording_sid as RecordingSid,
    };
  },
  calls: async (t) => ({
    upstream: makeClient(t),
    pageSize: EMULATOR_PAGE_SIZE,
    async addCall(parent) {
      const created = await emulator.createRecording(
        parent === undefined ? { status: 'absent' } : { parent_call_sid: parent, status: 'absent' },
      );
      return created.call_sid as CallSid;
    },
    async addRecording(call, status, createdAt) {
      const created = await emulator.createRecording({
        call_sid: call,
        status,
        bytes: 4000,
        ...(createdAt === undefined ? {} : { start_time: createdAt.toISOString() }),
      });
      return created.recording_sid as RecordingSid;
    },
  }),
});
