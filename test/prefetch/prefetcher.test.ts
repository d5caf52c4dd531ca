import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CallRecord } from '../../src/call-log/call-log.js';
import { SqliteCallLog } from '../../src/call-log/sqlite.js';
import { createError, isRecgateError } from '../../src/errors.js';
import { signalOf } from '../../src/io/abort.js';
import { Prefetcher, type PrefetchOutcome } from '../../src/prefetch/prefetcher.js';
import { SqlitePrefetchQueue } from '../../src/prefetch/sqlite.js';
import type { CachedRecording, RecordingRef } from '../../src/recordings/cache.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { tempDir } from '../helpers/common.js';
import { captureLogs } from '../helpers/log-capture.js';

async function setUp(t: Parameters<typeof tempDir>[0] & { after(fn: () => unknown): void }) {
  const path = `${tempDir(t)}/recgate.db`;
  const callLog = new SqliteCallLog(path);
  await callLog.migrate();
  const queue = new SqlitePrefetchQueue(path);
  t.after(async () => {
    await queue.close();
    await callLog.close();
  });
  return { callLog, queue };
}

function recording(size: number, complete: boolean): CachedRecording {
  return {
    outcome: complete ? 'hit' : 'miss',
    complete,
    size,
    etag: '"x"',
    lastModified: new Date(),
    createReadStream: (start: number, end: number) => Readable.from([Buffer.alloc(end - start + 1)]),
  };
}

describe('Prefetcher', () => {
  it('downloads queued recordings, retries transient failures, gives up on final ones and on purged calls', async (t) => {
    const { callLog, queue } = await setUp(t);
    const calls = Array.from({ length: 4 }, () => `CA${randomBytes(16).toString('hex')}` as CallSid);
    const recs = calls.map(() => `RE${randomBytes(16).toString('hex')}` as RecordingSid);
    for (const callSid of calls) await callLog.upsert({ businessId: 'acme', callSid });
    await callLog.markPurged(calls[3]!, null);
    const opened: RecordingRef[] = [];
    let flaky = 2;
    const cache = {
      open: async (ref: RecordingRef) => {
        opened.push(ref);
        if (ref.recordingSid === recs[1] && flaky-- > 0) throw createError('RECGATE_UPSTREAM_UNAVAILABLE');
        if (ref.recordingSid === recs[2]) throw createError('RECGATE_RECORDING_GONE');
        return recording(1000, ref.recordingSid !== recs[0]);
      },
    };
    const outcomes: PrefetchOutcome[] = [];
    const told: Array<[RecordingRef, string]> = [];
    const prefetcher = new Prefetcher({
      queue,
      cache,
      callLog,
      // The recording state hears every failed download, so one deleted at Twilio loses its local copies.
      state: {
        downloadFailed: async (ref, err) => {
          told.push([ref, isRecgateError(err) ? err.code : String(err)]);
        },
      },
      logger: captureLogs({ plain: true }).logger,
      pollMs: 20,
      retryBaseMs: 30,
      onOutcome: (o) => outcomes.push(o),
    });
    t.after(() => prefetcher.close());
    for (let i = 0; i < 4; i++)
      await queue.enqueue({ recordingSid: recs[i]!, callSid: calls[i]!, businessId: 'acme' });
    prefetcher.start();
    for (let i = 0; i < 200 && (await queue.depth()).queued + (await queue.depth()).running > 0; i++) {
      await sleep(20);
    }
    const states = await Promise.all(recs.map(async (r) => (await queue.get(r))?.state));
    assert.deepEqual(states, ['done', 'done', 'failed', 'failed']);
    assert.equal((await queue.get(recs[1]!))?.attempts, 3, 'two transient failures, then done');
    assert.match(String((await queue.get(recs[2]!))?.lastError), /^RECGATE_RECORDING_GONE/);
    assert.match(String((await queue.get(recs[3]!))?.lastError), /^RECGATE_RECORDING_PURGED/);
    assert.ok(!opened.some((r) => r.recordingSid === recs[3]), 'a purged call is never fetched');
    assert.deepEqual(
      told.filter(([, code]) => code === 'RECGATE_RECORDING_GONE').map(([ref]) => ref),
      [{ ownerCallSid: calls[2], recordingSid: recs[2], account: undefined }],
    );
    assert.deepEqual([...outcomes].sort(), ['done', 'done', 'failed', 'failed', 'retry', 'retry']);
  });

  it('a job running when the prefetcher stops goes back to the queue at once', async (t) => {
    const { callLog, queue } = await setUp(t);
    const callSid = `CA${randomBytes(16).toString('hex')}` as CallSid;
    await callLog.upsert({ businessId: 'acme', callSid });
    const recordingSid = `RE${randomBytes(16).toString('hex')}` as RecordingSid;
    await queue.enqueue({ recordingSid, callSid, businessId: 'acme' });
    let opened!: () => void;
    const started = new Promise<void>((resolve) => {
      opened = resolve;
    });
    const prefetcher = new Prefetcher({
      queue,
      // A download that only ends when the prefetcher's signal aborts.
      cache: {
        open: (_ref, options) =>
          new Promise((_resolve, reject) => {
            opened();
            const signal = signalOf(options?.signal);
            signal?.addEventListener('abort', () => reject(signal.reason));
          }),
      },
      callLog,
      logger: captureLogs({ plain: true }).logger,
      pollMs: 10,
    });
    prefetcher.start();
    await started;
    assert.equal((await queue.get(recordingSid))?.state, 'running');
    await prefetcher.close();
    const job = await queue.get(recordingSid);
    assert.equal(job?.state, 'queued');
    assert.ok(Date.parse(job!.runAfter) <= Date.now(), 'due now, not after its lease');
  });

  it('with concurrency 0 it claims nothing', async (t) => {
    const { callLog, queue } = await setUp(t);
    const callSid = `CA${randomBytes(16).toString('hex')}` as CallSid;
    await callLog.upsert({ businessId: 'acme', callSid } as Pick<CallRecord, 'businessId' | 'callSid'>);
    const recordingSid = `RE${randomBytes(16).toString('hex')}` as RecordingSid;
    await queue.enqueue({ recordingSid, callSid, businessId: 'acme' });
    const prefetcher = new Prefetcher({
      queue,
      cache: { open: async () => assert.fail('nothing may be fetched') },
      callLog,
      logger: captureLogs({ plain: true }).logger,
      concurrency: 0,
      pollMs: 10,
    });
    prefetcher.start();
    await sleep(60);
    await prefetcher.close();
    assert.equal((await queue.get(recordingSid))?.state, 'queued');
  });
});
