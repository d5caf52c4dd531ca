import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Emulator } from '../../src/emulator/index.js';
import { sha256 } from '../helpers/common.js';
import { API_KEY_SECRET, API_KEY_SID, api, basic, control, start } from './helpers.js';

const RFC2822 = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$/;
const CALL = /^CA[0-9a-f]{32}$/;
const RECORDING = /^RE[0-9a-f]{32}$/;

describe('emulator REST API', () => {
  let emulator: Emulator;
  before(async () => {
    emulator = await start();
  });
  after(() => emulator.close());

  describe('auth', () => {
    it('accepts the account SID with its auth token', async () => {
      const created = await emulator.createRecording({ bytes: 2000 });
      const res = await api(emulator, `Calls/${created.call_sid}.json`);
      assert.equal(res.status, 200);
    });

    it('accepts an API key with its secret', async () => {
      const created = await emulator.createRecording({ bytes: 2000 });
      const res = await fetch(
        `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/Calls/${created.call_sid}.json`,
        {
          headers: { authorization: basic(API_KEY_SID, API_KEY_SECRET) },
        },
      );
      assert.equal(res.status, 200);
    });

    for (const [name, header] of [
      ['missing credentials', undefined],
      ['a wrong auth token', basic(`AC${'a'.repeat(32)}`, 'wrong')],
      ['a wrong API key secret', basic(API_KEY_SID, 'wrong')],
      ['an unknown API key', basic(`SK${'c'.repeat(32)}`, API_KEY_SECRET)],
      ['a non-Basic scheme', 'Bearer abc'],
    ] as const) {
      it(`answers 401 with Twilio's error 20003 for ${name}`, async () => {
        const res = await fetch(
          `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/Recordings.json`,
          {
            headers: header === undefined ? {} : { authorization: header },
          },
        );
        assert.equal(res.status, 401);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Basic/);
        assert.deepEqual(await res.json(), {
          code: 20003,
          message: 'Authenticate',
          more_info: 'https://www.twilio.com/docs/errors/20003',
          status: 401,
        });
      });
    }

    it('does not guard the control API', async () => {
      assert.equal((await control(emulator, 'stats')).status, 200);
    });

    it('answers 404 for another account in the path', async () => {
      const res = await api(emulator, `/2010-04-01/Accounts/AC${'1'.repeat(32)}/Recordings.json`);
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { code: number }).code, 20404);
    });
  });

  it('serves a call in Twilio shape', async () => {
    const created = await emulator.createRecording({
      duration_s: 42,
      from: '+15005550006',
      to: '+15005550007',
    });
    const res = await api(emulator, `Calls/${created.call_sid}.json`);
    assert.equal(res.headers.get('content-type')?.split(';')[0], 'application/json');
    const call = (await res.json()) as Record<string, unknown>;
    assert.equal(call.sid, created.call_sid);
    assert.equal(call.account_sid, emulator.accountSid);
    assert.equal(call.parent_call_sid, null);
    assert.equal(call.direction, 'inbound');
    assert.equal(call.from, '+15005550006');
    assert.equal(call.to, '+15005550007');
    assert.equal(call.status, 'completed');
    assert.equal(call.duration, '42');
    assert.equal(call.uri, `/2010-04-01/Accounts/${emulator.accountSid}/Calls/${created.call_sid}.json`);
    for (const field of ['date_created', 'date_updated', 'start_time', 'end_time']) {
      assert.match(call[field] as string, RFC2822, field);
    }
    assert.equal(Date.parse(call.end_time as string) - Date.parse(call.start_time as string), 42_000);
  });

  it('serves a dual-channel recording as stereo MP3 and WAV with RequestedChannels=2, and refuses it for mono (16113)', async () => {
    const dual = await emulator.createRecording({ bytes: 6000, channels: 2 });
    const mono = await emulator.createRecording({ bytes: 6000 });
    const json = async (sid: string | null) =>
      (await (await api(emulator, `Recordings/${sid}.json`)).json()) as { channels: number };
    assert.equal((await json(dual.recording_sid)).channels, 2);
    assert.equal((await json(mono.recording_sid)).channels, 1);
    const mp3 = await api(emulator, `Recordings/${dual.recording_sid}.mp3?RequestedChannels=2`);
    assert.equal(mp3.status, 200);
    const body = Buffer.from(await mp3.arrayBuffer());
    assert.equal(body.length, 6000, 'the size of the mono file');
    assert.notEqual(sha256(body), dual.sha256);
    const wav = await api(emulator, `Recordings/${dual.recording_sid}.wav?RequestedChannels=2`);
    assert.equal(wav.headers.get('content-type'), 'audio/x-wav');
    assert.equal(Buffer.from(await wav.arrayBuffer()).readUInt16LE(22), 2, 'a stereo WAV');
    const mixed = await api(emulator, `Recordings/${dual.recording_sid}.mp3`);
    assert.equal(sha256(Buffer.from(await mixed.arrayBuffer())), dual.sha256, 'the default is the mono mix');
    for (const ext of ['mp3', 'wav']) {
      const refused = await api(emulator, `Recordings/${mono.recording_sid}.${ext}?RequestedChannels=2`);
      assert.equal(refused.status, 400);
      assert.equal(((await refused.json()) as { code: number }).code, 16113);
    }
    const bad = await api(emulator, `Recordings/${dual.recording_sid}.mp3?RequestedChannels=3`);
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { code: number }).code, 20001);
  });

  it('serves a recording in Twilio shape', async () => {
    const created = await emulator.createRecording({ duration_s: 30 });
    assert.match(created.recording_sid!, RECORDING);
    const res = await api(emulator, `Recordings/${created.recording_sid}.json`);
    assert.equal(res.status, 200);
    const recording = (await res.json()) as Record<string, unknown>;
    assert.equal(recording.sid, created.recording_sid);
    assert.equal(recording.call_sid, created.call_sid);
    assert.equal(recording.account_sid, emulator.accountSid);
    assert.equal(recording.status, 'completed');
    assert.equal(recording.duration, '30');
    assert.equal(recording.channels, 1);
    assert.equal(recording.source, 'RecordVerb');
    assert.equal(recording.encryption_details, null);
    assert.equal(recording.api_version, '2010-04-01');
    assert.match(recording.price as string, /^-\d+\.\d+$/);
    assert.equal(
      recording.uri,
      `/2010-04-01/Accounts/${emulator.accountSid}/Recordings/${created.recording_sid}.json`,
    );
    assert.equal(
      recording.media_url,
      `${emulator.url}/2010-04-01/Accounts/${emulator.accountSid}/Recordings/${created.recording_sid}`,
    );
    assert.equal(created.media_url, recording.media_url);
    for (const field of ['date_created', 'date_updated', 'start_time']) {
      assert.match(recording[field] as string, RFC2822, field);
    }
    const viaCall = await api(emulator, `Calls/${created.call_sid}/Recordings/${created.recording_sid}.json`);
    assert.deepEqual(await viaCall.json(), recording);
  });

  it('pages call recordings and account recordings, newest first, following next_page_uri to the end', async () => {
    const first = await emulator.createRecording({ bytes: 1500, start_time: '2024-01-01T10:00:00Z' });
    const sids = [first.recording_sid!];
    for (let i = 1; i < 7; i++) {
      const more = await emulator.createRecording({
        call_sid: first.call_sid,
        bytes: 1500,
        start_time: `2024-01-01T10:0${i}:00Z`,
      });
      assert.equal(more.call_sid, first.call_sid);
      sids.push(more.recording_sid!);
    }
    const newestFirst = [...sids].reverse();
    for (const startPath of [
      `Calls/${first.call_sid}/Recordings.json?PageSize=3`,
      `Recordings.json?CallSid=${first.call_sid}&PageSize=3`,
    ]) {
      const seen: string[] = [];
      let path: string | null = startPath;
      let pages = 0;
      while (path !== null) {
        const res = await api(emulator, path);
        assert.equal(res.status, 200);
        const body = (await res.json()) as {
          recordings: Array<{ sid: string }>;
          page: number;
          page_size: number;
          start: number;
          end: number;
          first_page_uri: string;
          next_page_uri: string | null;
          previous_page_uri: string | null;
          uri: string;
        };
        assert.equal(body.page, pages);
        assert.equal(body.page_size, 3);
        assert.equal(body.start, pages * 3);
        assert.equal(body.end, pages * 3 + body.recordings.length - 1);
        assert.match(body.first_page_uri, /^\/2010-04-01\/Accounts\/AC[0-9a-f]{32}\/.*Page=0/);
        assert.match(body.uri, /^\/2010-04-01\//);
        assert.equal(body.previous_page_uri === null, pages === 0);
        if (startPath.startsWith('Recordings.json') && body.next_page_uri !== null) {
          assert.match(body.next_page_uri, new RegExp(`CallSid=${first.call_sid}`));
        }
        seen.push(...body.recordings.map((r) => r.sid));
        path = body.next_page_uri;
        pages++;
      }
      assert.equal(pages, 3);
      assert.deepEqual(seen, newestFirst);
    }
  });

  it('rejects a bad PageSize', async () => {
    const res = await api(emulator, 'Recordings.json?PageSize=0');
    assert.equal(res.status, 400);
  });

  it('answers 404 with code 20404 for unknown resources', async () => {
    for (const path of [
      `Calls/CA${'0'.repeat(32)}.json`,
      `Calls/CA${'0'.repeat(32)}/Recordings.json`,
      `Recordings/RE${'0'.repeat(32)}.json`,
      `Recordings/RE${'0'.repeat(32)}.mp3`,
      'Nonsense.json',
      'Recordings/not-a-sid.json',
    ]) {
      const res = await api(emulator, path);
      assert.equal(res.status, 404, path);
      const body = (await res.json()) as { code: number; status: number; more_info: string };
      assert.equal(body.code, 20404);
      assert.equal(body.status, 404);
      assert.equal(body.more_info, 'https://www.twilio.com/docs/errors/20404');
    }
  });

  it('deletes a recording: 204, then metadata and media answer 404 and lists omit it', async () => {
    const created = await emulator.createRecording({ bytes: 5000 });
    assert.equal((await api(emulator, `Recordings/${created.recording_sid}.mp3`)).status, 200);
    const res = await api(emulator, `Recordings/${created.recording_sid}.json`, { method: 'DELETE' });
    assert.equal(res.status, 204);
    assert.equal((await res.text()).length, 0);
    const meta = await api(emulator, `Recordings/${created.recording_sid}.json`);
    assert.equal(meta.status, 404);
    assert.equal(((await meta.json()) as { code: number }).code, 20404);
    for (const suffix of ['', '.mp3', '.wav']) {
      assert.equal((await api(emulator, `Recordings/${created.recording_sid}${suffix}`)).status, 404);
    }
    const list = (await (await api(emulator, `Calls/${created.call_sid}/Recordings.json`)).json()) as {
      recordings: unknown[];
    };
    assert.equal(list.recordings.length, 0);
    assert.equal(
      (await api(emulator, `Recordings/${created.recording_sid}.json`, { method: 'DELETE' })).status,
      404,
    );
  });

  it('creates a <Dial> child leg whose recording lives on the parent call', async () => {
    const parent = `CA${'d'.repeat(32)}`;
    const child = `CA${'e'.repeat(32)}`;
    const res = await control(emulator, 'recordings', {
      call_sid: child,
      parent_call_sid: parent,
      duration_s: 20,
    });
    assert.equal(res.status, 201);
    const created = (await res.json()) as Record<string, unknown>;
    assert.equal(created.call_sid, child);
    assert.equal(created.parent_call_sid, parent);
    assert.equal(created.recording_call_sid, parent);
    assert.equal(created.direction, 'outbound-dial');

    const childCall = (await (await api(emulator, `Calls/${child}.json`)).json()) as Record<string, unknown>;
    assert.equal(childCall.parent_call_sid, parent);
    assert.equal(childCall.direction, 'outbound-dial');
    const parentCall = (await (await api(emulator, `Calls/${parent}.json`)).json()) as Record<
      string,
      unknown
    >;
    assert.equal(parentCall.parent_call_sid, null);
    assert.equal(parentCall.direction, 'inbound');
    assert.equal(childCall.from, parentCall.to);

    const onChild = (await (await api(emulator, `Calls/${child}/Recordings.json`)).json()) as {
      recordings: unknown[];
    };
    assert.equal(onChild.recordings.length, 0);
    const onParent = (await (await api(emulator, `Calls/${parent}/Recordings.json`)).json()) as {
      recordings: Array<{ sid: string; call_sid: string; source: string }>;
    };
    assert.equal(onParent.recordings.length, 1);
    assert.equal(onParent.recordings[0]!.sid, created.recording_sid);
    assert.equal(onParent.recordings[0]!.call_sid, parent);
    assert.equal(onParent.recordings[0]!.source, 'DialVerb');
    const children = (await (await api(emulator, `Calls.json?ParentCallSid=${parent}`)).json()) as {
      calls: Array<{ sid: string }>;
    };
    assert.deepEqual(
      children.calls.map((c) => c.sid),
      [child],
    );
  });

  it('creates a call without a recording', async () => {
    for (const body of [{ status: 'absent' }, { no_recording: true }]) {
      const res = await control(emulator, 'recordings', body);
      assert.equal(res.status, 201);
      const created = (await res.json()) as Record<string, unknown>;
      assert.match(created.call_sid as string, CALL);
      assert.equal(created.recording_sid, null);
      assert.equal(created.sha256, null);
      assert.equal(created.size, 0);
      assert.equal((await api(emulator, `Calls/${created.call_sid}.json`)).status, 200);
      const list = (await (await api(emulator, `Calls/${created.call_sid}/Recordings.json`)).json()) as {
        recordings: unknown[];
      };
      assert.equal(list.recordings.length, 0);
    }
  });

  it('keeps a processing recording unplayable until ready_after_ms passes', async () => {
    const created = await emulator.createRecording({
      bytes: 3000,
      status: 'processing',
      ready_after_ms: 300,
    });
    const meta = (await (await api(emulator, `Recordings/${created.recording_sid}.json`)).json()) as Record<
      string,
      unknown
    >;
    assert.equal(meta.status, 'processing');
    assert.equal(meta.duration, '-1');
    const media = await api(emulator, `Recordings/${created.recording_sid}.mp3`);
    assert.equal(media.status, 404);
    assert.equal(((await media.json()) as { code: number }).code, 20404);
    await sleep(400);
    const later = (await (await api(emulator, `Recordings/${created.recording_sid}.json`)).json()) as Record<
      string,
      unknown
    >;
    assert.equal(later.status, 'completed');
    const ready = await api(emulator, `Recordings/${created.recording_sid}.mp3`);
    assert.equal(ready.status, 200);
    assert.equal((await ready.arrayBuffer()).byteLength, 3000);
  });

  it('creates a recording already deleted upstream', async () => {
    const created = await emulator.createRecording({ status: 'deleted', bytes: 3000 });
    assert.equal(created.status, 'deleted');
    assert.equal((await api(emulator, `Recordings/${created.recording_sid}.json`)).status, 404);
    assert.equal((await api(emulator, `Recordings/${created.recording_sid}.mp3`)).status, 404);
    assert.equal((await api(emulator, `Calls/${created.call_sid}.json`)).status, 200);
  });

  it('validates control API bodies and names the bad field', async () => {
    for (const [body, field] of [
      [{ bytes: 1000, duration_s: 3 }, /bytes/],
      [{ call_sid: 'CA123' }, /call_sid/],
      [{ status: 'weird' }, /status/],
      [{ bytes: 10 }, /bytes/],
      [{ unknown_field: 1 }, /unknown_field|body/],
      [{ ready_after_ms: 5 }, /ready_after_ms/],
    ] as const) {
      const res = await control(emulator, 'recordings', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      const error = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(error.error.code, 'RECGATE_INVALID_REQUEST');
      assert.match(error.error.message, field);
    }
    await assert.rejects(emulator.createRecording({ bytes: -5 }), /bytes/);
    const fault = await control(emulator, 'faults', { kind: 'explode' });
    assert.equal(fault.status, 400);
  });

  it('answers the control API create with size and sha256', async () => {
    const res = await control(emulator, 'recordings', { bytes: 12_345 });
    const created = (await res.json()) as Record<string, unknown>;
    assert.equal(created.size, 12_345);
    assert.match(created.sha256 as string, /^[0-9a-f]{64}$/);
    assert.equal(created.account_sid, emulator.accountSid);
  });
});

describe('emulator control API bodies', () => {
  let emulator: Emulator;
  before(async () => {
    emulator = await start();
  });
  after(() => emulator.close());

  it('accepts an empty JSON body and rejects malformed JSON with 400', async () => {
    const headers = { 'content-type': 'application/json' };
    assert.equal((await fetch(`${emulator.url}/__emulator/reset`, { method: 'POST', headers })).status, 200);
    const created = await fetch(`${emulator.url}/__emulator/recordings`, { method: 'POST', headers });
    assert.equal(created.status, 201);
    assert.equal(((await created.json()) as { duration_s: number }).duration_s, 30);
    const bad = await fetch(`${emulator.url}/__emulator/recordings`, { method: 'POST', headers, body: '{' });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { code: string } }).error.code, 'RECGATE_INVALID_REQUEST');
  });
});
