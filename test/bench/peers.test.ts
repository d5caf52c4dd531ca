/**
 * forEachPeer, the loop every scenario runs its peers through: one peer at a time, each stopped; and the
 * reading of recgate's sync guard turn-offs from /metrics.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forEachPeer, type Peer, type PeerStarter, sumSyncIoOff } from '../../bench/lib/peers.js';

function fakeStarter(name: string, events: string[]): PeerStarter {
  return {
    name,
    async start(): Promise<Peer> {
      events.push(`start ${name}`);
      return {
        name,
        origin: 'http://127.0.0.1:1',
        headers: {},
        prepare: async () => '/',
        servingPids: () => [],
        stop: async () => {
          events.push(`stop ${name}`);
        },
      };
    },
  };
}

test('forEachPeer stops each peer before it starts the next', async () => {
  const events: string[] = [];
  await forEachPeer([fakeStarter('a', events), fakeStarter('b', events)], async (peer) => {
    events.push(`use ${peer.name}`);
  });
  assert.deepEqual(events, ['start a', 'use a', 'stop a', 'start b', 'use b', 'stop b']);
});

test('forEachPeer stops the peer when use fails, and starts no other', async () => {
  const events: string[] = [];
  await assert.rejects(
    forEachPeer([fakeStarter('a', events), fakeStarter('b', events)], async () => {
      throw new Error('wrong bytes');
    }),
    { message: 'wrong bytes' },
  );
  assert.deepEqual(events, ['start a', 'stop a']);
});

test('forEachPeer names the peer that did not start', async () => {
  const events: string[] = [];
  const cause = new Error('/ping server exited (1)');
  await assert.rejects(
    forEachPeer(
      [
        fakeStarter('a', events),
        {
          name: 'Varnish',
          start: async () => {
            throw cause;
          },
        },
      ],
      async () => {},
    ),
    { message: 'Varnish did not start: /ping server exited (1)', cause },
  );
  assert.deepEqual(events, ['start a', 'stop a']);
});

test('sumSyncIoOff sums every guard of recgate_sync_io_off_total, and nothing else', () => {
  const exposition = [
    '# HELP recgate_sync_io_off_total Times slow synchronous file-system calls turned them off',
    '# TYPE recgate_sync_io_off_total counter',
    'recgate_sync_io_off_total{guard="metadata"} 2',
    'recgate_sync_io_off_total{guard="reads"} 1',
    'recgate_sync_io_off_totally_different 40',
    'recgate_cache_events_total{event="cache_miss"} 7',
    '',
  ].join('\n');
  assert.equal(sumSyncIoOff(exposition), 3);
  assert.equal(sumSyncIoOff('# TYPE recgate_sync_io_off_total counter\n'), 0, 'no turn-off yet: no series');
});
