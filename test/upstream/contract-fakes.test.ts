/**
 * The Upstream contract for the fakes other suites stand on: the resolver's FakeCallsUpstream, the recording
 * cache's in-process FakeUpstream, and httpUpstream (the cache's child processes) against a media server.
 */
import { randomBytes } from 'node:crypto';
import type { RecordingSid } from '../../src/sid.js';
import { audioBytes, FakeUpstream, httpUpstream, startMediaServer } from '../recordings/helpers.js';
import { upstreamContractTests } from './contract.js';
import { FakeCallsUpstream } from './fakes.js';

const LAST_MODIFIED = 'Tue, 01 Apr 2025 10:00:00 GMT';
/** A body that trickles: 4 KiB every 20 ms. */
const SLOW = { chunkSize: 4096, chunkDelayMs: 20 };

const newRecordingSid = () => `RE${randomBytes(16).toString('hex')}` as RecordingSid;

upstreamContractTests('FakeCallsUpstream (resolver tests)', {
  // No media: the resolver never asks for it.
  calls: async () => {
    const upstream = new FakeCallsUpstream();
    return {
      upstream,
      addCall: async (parent) => upstream.addCall(undefined, parent ?? null),
      addRecording: async (call, status, createdAt) => upstream.addRecording(call, status, createdAt),
    };
  },
});

upstreamContractTests('FakeUpstream (recording cache tests)', {
  media: async (_t, setup) => {
    const data = audioBytes(setup.size);
    const upstream = new FakeUpstream({
      data,
      etag: '"fake-1"',
      lastModified: LAST_MODIFIED,
      contentType: 'audio/mpeg',
      acceptsRanges: setup.ranges,
      ttfbMs: setup.headersDelayMs,
      ...(setup.slowBody ? SLOW : {}),
      ...(setup.breakAt?.how === 'reset' ? { failAt: setup.breakAt.offset } : {}),
      ...(setup.breakAt?.how === 'close' ? { shortAt: setup.breakAt.offset } : {}),
    });
    const announced = { etag: '"fake-1"', lastModified: LAST_MODIFIED, contentType: 'audio/mpeg' };
    return { upstream, sid: newRecordingSid(), data, announced };
  },
});

upstreamContractTests('httpUpstream (cache child processes) against a media server', {
  media: async (t, setup) => {
    const data = audioBytes(setup.size);
    const server = await startMediaServer({
      data,
      etag: '"media-1"',
      acceptsRanges: setup.ranges,
      headersDelayMs: setup.headersDelayMs,
      ...(setup.slowBody ? SLOW : {}),
      ...(setup.breakAt === undefined ? {} : { breakAt: setup.breakAt }),
    });
    t.after(() => server.close());
    const announced = { etag: '"media-1"', lastModified: LAST_MODIFIED, contentType: 'audio/mpeg' };
    return { upstream: httpUpstream(server.url), sid: newRecordingSid(), data, announced };
  },
});
