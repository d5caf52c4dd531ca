/**
 * The soak's pure parts: what each request kind asks for and expects, how responses are judged, and how
 * worker deaths and upstream over-fetching are read. The end-to-end run is in soak.test.ts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import {
  BodyCheck,
  type Credentials,
  checkHead,
  describeRequest,
  entityTag,
  KINDS,
  type Kind,
  MAX_RANGE_BYTES,
  MIX,
  type PlannedRequest,
  pickKind,
  planRequest,
  type SoakRecording,
} from '../../soak/requests.js';
import { integerFlag } from '../../soak/run.js';
import { upstreamProblems, validateSoakOptions, workerProblems } from '../../soak/soak.js';
import { seededRandom } from '../faults/seed.js';

function recording(size: number): SoakRecording {
  const content = Buffer.alloc(size);
  for (let i = 0; i < size; i++) content[i] = (i * 31 + 7) & 0xff;
  return {
    callSid: `CA${'1'.repeat(32)}`,
    recordingSid: `RE${'2'.repeat(32)}`,
    size,
    sha256: createHash('sha256').update(content).digest('hex'),
    content,
  };
}

const creds: Credentials = {
  owner: 'Bearer owner',
  otherBusiness: 'Bearer other',
  bad: ['Bearer expired', 'Bearer not-a-jwt'],
};

/** Feeds `body` to a BodyCheck in chunks of `chunk` bytes. */
function feed(plan: PlannedRequest, body: Buffer, chunk = 1000): BodyCheck {
  const check = new BodyCheck(plan);
  for (let i = 0; i < body.length; i += chunk) check.update(body.subarray(i, i + chunk));
  return check;
}

test('every plan stays within the recording and expects what RFC 9110 and the README promise', () => {
  for (const size of [2, 100, 65_536, 3_000_001]) {
    const rec = recording(size);
    const random = seededRandom(size, 'plans');
    for (let i = 0; i < 300; i++) {
      for (const kind of KINDS) {
        const plan = planRequest(kind, rec, random, creds);
        assert.equal(plan.path, `/api/calls/${rec.callSid}/download`);
        assert.equal(plan.method, kind === 'head' ? 'HEAD' : 'GET');
        const auth = plan.headers.authorization;
        if (kind === 'no token') assert.equal(auth, undefined);
        else if (kind === 'bad token') assert.ok(creds.bad.includes(auth!));
        else if (kind === 'other business') assert.equal(auth, creds.otherBusiness);
        else assert.equal(auth, creds.owner);
        if (plan.body.type === 'bytes') {
          const { start, end } = plan.body;
          assert.ok(start >= 0 && start <= end && end < size, `${kind}: ${start}-${end} of ${size}`);
          assert.equal(plan.expectHeaders['content-length'], String(end - start + 1));
          assert.equal(plan.expectHeaders.etag, entityTag(rec));
          if (plan.status === 206) {
            assert.equal(plan.expectHeaders['content-range'], `bytes ${start}-${end}/${size}`);
            assert.ok(plan.headers.range, `${kind} sends a Range`);
          } else {
            assert.equal(plan.status, 200);
            assert.deepEqual([start, end], [0, size - 1]);
          }
        }
        if (kind === 'range window' || kind === 'range suffix') {
          const { start, end } = plan.body as { start: number; end: number };
          assert.ok(end - start + 1 <= MAX_RANGE_BYTES);
        }
        if (kind === 'range suffix') {
          assert.match(plan.headers.range!, /^bytes=-\d+$/);
          assert.equal((plan.body as { end: number }).end, size - 1);
        }
        if (kind === 'range open-ended') assert.match(plan.headers.range!, /^bytes=\d+-$/);
        if (kind === 'disconnect') {
          const { start, end } = plan.body as { start: number; end: number };
          assert.ok(plan.disconnectAfter! >= 1 && plan.disconnectAfter! <= Math.max(1, end - start));
        } else {
          assert.equal(plan.disconnectAfter, undefined);
        }
      }
    }
  }
  const rec = recording(1000);
  const random = seededRandom(1, 'statuses');
  const statuses = Object.fromEntries(KINDS.map((k) => [k, planRequest(k, rec, random, creds).status]));
  assert.deepEqual(statuses, {
    hit: 200,
    miss: 200,
    'range window': 206,
    'range suffix': 206,
    'range open-ended': 206,
    head: 200,
    'if-none-match': 304,
    'no token': 401,
    'bad token': 401,
    'other business': 404,
    disconnect: statuses.disconnect === 206 ? 206 : 200,
  });
  assert.equal(entityTag(rec), `"RE${'2'.repeat(32)}-1000"`);
});

test('the same seed plans the same requests', () => {
  const rec = recording(50_000);
  const plans = (seed: number) => {
    const random = seededRandom(seed, 'client 0');
    return Array.from({ length: 50 }, () =>
      planRequest(pickKind(random, { fresh: true, cached: true }), rec, random, creds),
    );
  };
  assert.deepEqual(plans(7), plans(7));
  assert.notDeepEqual(plans(7), plans(8));
});

test('pickKind follows the mix, and leaves out miss and hit when they have nothing to ask for', () => {
  const random = seededRandom(3, 'mix');
  const counts = new Map<Kind, number>();
  const draws = 100_000;
  for (let i = 0; i < draws; i++) {
    const k = pickKind(random, { fresh: true, cached: true });
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const total = KINDS.reduce((sum, k) => sum + MIX[k], 0);
  for (const kind of KINDS) {
    const share = (counts.get(kind) ?? 0) / draws;
    assert.ok(Math.abs(share - MIX[kind] / total) < 0.01, `${kind}: ${share} vs ${MIX[kind] / total}`);
  }
  for (let i = 0; i < 10_000; i++) {
    const k = pickKind(random, { fresh: false, cached: false });
    assert.ok(k !== 'miss' && k !== 'hit', k);
  }
});

test('checkHead names a wrong status or header', () => {
  const rec = recording(1000);
  const plan = planRequest('range open-ended', rec, () => 0.5, creds);
  const good = {
    'content-length': String(1000 - 500),
    'content-range': 'bytes 500-999/1000',
    etag: entityTag(rec),
  };
  assert.equal(checkHead(plan, 206, good), undefined);
  assert.equal(checkHead(plan, 200, good), 'status 200, expected 206');
  assert.equal(
    checkHead(plan, 206, { ...good, 'content-range': 'bytes 500-998/1000' }),
    'content-range: "bytes 500-998/1000", expected "bytes 500-999/1000"',
  );
  assert.equal(
    checkHead(plan, 206, { ...good, etag: undefined }),
    `etag: absent, expected ${JSON.stringify(entityTag(rec))}`,
  );
});

test('BodyCheck: whole bodies by sha256, ranges and cut bodies byte for byte', () => {
  const rec = recording(10_000);
  const whole = planRequest('hit', rec, () => 0, creds);
  assert.equal(feed(whole, rec.content).complete(), undefined);
  const flipped = Buffer.from(rec.content);
  flipped[6000]! ^= 1;
  assert.match(feed(whole, flipped).complete()!, /^body sha256 [0-9a-f]{16}… differs/);
  assert.equal(feed(whole, rec.content.subarray(0, 9999)).complete(), '9999 body bytes, expected 10000');

  const range = planRequest('range open-ended', rec, () => 0.25, creds);
  const { start } = range.body as { start: number };
  assert.equal(start, 2500);
  assert.equal(feed(range, rec.content.subarray(start), 333).complete(), undefined);
  assert.equal(
    feed(range, flipped.subarray(start), 333).complete(),
    'body bytes differ from the recording from byte 6000 on',
  );
  // Shifted by one byte: wrong from the first.
  assert.equal(
    feed(range, rec.content.subarray(start + 1), 333).complete(),
    '7499 body bytes, expected 7500',
  );
  assert.equal(
    feed(range, rec.content.subarray(start - 1, 9999), 333).complete(),
    'body bytes differ from the recording from byte 2500 on',
  );

  const cut = { ...whole, disconnectAfter: 4000 };
  assert.equal(feed(cut, rec.content.subarray(0, 4096)).cut(), undefined);
  assert.equal(
    feed(cut, flipped.subarray(0, 7000)).cut(),
    'body bytes differ from the recording from byte 6000 on',
  );
  assert.equal(new BodyCheck(cut).cut(), 'no body byte arrived before going away');
});

test('BodyCheck: errors by their JSON code, HEAD and 304 by having no body', () => {
  const rec = recording(1000);
  const other = planRequest('other business', rec, () => 0, creds);
  const json = (code: string) => Buffer.from(JSON.stringify({ error: { code, message: 'm' } }));
  assert.equal(feed(other, json('RECGATE_NOT_FOUND'), 7).complete(), undefined);
  assert.equal(
    feed(other, json('RECGATE_UNAUTHENTICATED')).complete(),
    'error code "RECGATE_UNAUTHENTICATED", expected RECGATE_NOT_FOUND',
  );
  assert.match(feed(other, Buffer.from('<html>')).complete()!, /^body is not a JSON error/);
  const head = planRequest('head', rec, () => 0, creds);
  assert.equal(new BodyCheck(head).complete(), undefined);
  assert.equal(feed(head, Buffer.from('x')).complete(), '1 body bytes, expected none');
});

test('describeRequest names the kind, the URL, the headers that matter and the recording', () => {
  const rec = recording(1000);
  const plan = planRequest('range suffix', rec, () => 0.5, creds);
  assert.equal(
    describeRequest(plan),
    `range suffix: GET /api/calls/${rec.callSid}/download (range: ${plan.headers.range}; ${rec.recordingSid}, 1000 bytes)`,
  );
});

test('workerProblems: a worker gone, a worker_exit or primary_gave_up line', () => {
  assert.deepEqual(workerProblems([10, 11], [10, 11], '{"level":40,"msg":"slow"}\n'), []);
  const exit = '{"level":40,"event":"worker_exit","workerPid":11,"signal":"SIGKILL"}';
  const problems = workerProblems([10, 11], [10, 12], `not json\n${exit}\n{"event":`);
  assert.deepEqual(problems, [
    'worker 11 is gone (crashed or killed): serving pids 10, 12, before the load 10, 11',
    `recgate logged ${exit}`,
  ]);
  assert.match(workerProblems([10, 11], [], '')[0]!, /serving pids none/);
  assert.equal(workerProblems([], [], '{"event":"primary_gave_up","reason":"r"}').length, 1);
});

test('upstreamProblems: each requested recording fetched whole, within 1.1x, and nothing unrequested', () => {
  const a = { recordingSid: `RE${'a'.repeat(32)}`, size: 1000 };
  const b = { recordingSid: `RE${'b'.repeat(32)}`, size: 2000 };
  const stats = (bytes: Record<string, number>) => ({
    media_requests: Object.fromEntries(Object.keys(bytes).map((k) => [k, 1])),
    media_bytes: bytes,
  });
  assert.deepEqual(upstreamProblems([a], [b], stats({ [a.recordingSid]: 1100 })), []);
  assert.match(upstreamProblems([a], [], stats({ [a.recordingSid]: 1101 }))[0]!, /more than 1\.1× its 1000$/);
  assert.match(upstreamProblems([a], [], stats({}))[0]!, /sent 0 bytes .* never fetched whole/);
  assert.deepEqual(upstreamProblems([], [b], stats({ [b.recordingSid]: 10 })), [
    `recgate fetched ${b.recordingSid} 1 times although no client asked for it`,
  ]);
});

test('options are validated where they enter, naming the field', () => {
  assert.deepEqual(validateSoakOptions({}), {
    durationS: 60,
    concurrency: 16,
    seed: 1,
    workers: 2,
    entry: 'dist',
  });
  assert.throws(() => validateSoakOptions({ durationS: 0 }), /options\.durationS must be a positive number/);
  assert.throws(() => validateSoakOptions({ concurrency: 1.5 }), /options\.concurrency must be a positive/);
  assert.throws(() => validateSoakOptions({ workers: 0 }), /options\.workers must be a positive integer/);
  assert.throws(() => validateSoakOptions({ seed: -1 }), /options\.seed must be a non-negative integer/);
  assert.equal(integerFlag('duration', undefined, 60, 1), 60);
  assert.equal(integerFlag('duration', '5', 60, 1), 5);
  for (const bad of ['0', '-3', '2.5', 'ten', '']) {
    assert.throws(
      () => integerFlag('duration', bad, 60, 1),
      /^TypeError: --duration must be an integer >= 1/,
    );
  }
  assert.equal(integerFlag('seed', '0', 1, 0), 0);
});
