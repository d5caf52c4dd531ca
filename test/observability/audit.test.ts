import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PlayRecord } from '../../src/call-log/call-log.js';
import { AuditTrail } from '../../src/observability/audit.js';
import type { CallSid, RecordingSid } from '../../src/sid.js';
import { captureLogs } from '../helpers/log-capture.js';

function play(i: number): PlayRecord {
  return {
    playedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    businessId: 'acme',
    callSid: `CA${'1'.repeat(32)}` as CallSid,
    recordingSid: `RE${'2'.repeat(32)}` as RecordingSid,
    bytes: i,
    status: 200,
    requestId: `r${i}`,
  };
}

function counter() {
  const counts: Record<string, number> = {};
  return {
    counts,
    metrics: {
      auditPlays: {
        inc: (l: { outcome: string }, n = 1) => {
          counts[l.outcome] = (counts[l.outcome] ?? 0) + n;
        },
      },
    },
  };
}

describe('AuditTrail', () => {
  it('logs every play, and stores them in batches', async () => {
    const { logger, records: lines } = captureLogs({ plain: true });
    const stored: PlayRecord[][] = [];
    const { counts, metrics } = counter();
    const audit = new AuditTrail({
      logger,
      metrics: metrics as never,
      callLog: { recordPlays: async (batch) => void stored.push([...batch]) },
      maxBatch: 2,
      flushMs: 60_000,
    });
    for (let i = 0; i < 5; i++) audit.play(play(i));
    await audit.close();
    assert.deepEqual(
      stored.flat().map((p) => p.requestId),
      ['r0', 'r1', 'r2', 'r3', 'r4'],
    );
    assert.ok(stored.every((b) => b.length <= 2));
    assert.equal(lines.filter((l) => l.event === 'play').length, 5);
    assert.deepEqual(counts, { logged: 5, stored: 5 });
  });

  it('keeps rows while the database fails, tries again, and drops the oldest beyond maxPending', async () => {
    const { logger, records: lines } = captureLogs({ plain: true });
    let failing = true;
    const stored: PlayRecord[] = [];
    const { counts, metrics } = counter();
    const audit = new AuditTrail({
      logger,
      metrics: metrics as never,
      callLog: {
        recordPlays: async (batch: readonly PlayRecord[]) => {
          if (failing) throw new Error('database down');
          stored.push(...batch);
        },
      },
      maxBatch: 100,
      maxPending: 3,
      flushMs: 60_000,
    });
    for (let i = 0; i < 5; i++) audit.play(play(i));
    await audit.flush();
    assert.equal(stored.length, 0);
    assert.ok(lines.some((l) => l.event === 'audit_write_failed'));
    assert.ok(lines.some((l) => l.event === 'audit_dropped'));
    failing = false;
    await audit.close();
    assert.deepEqual(
      stored.map((p) => p.requestId),
      ['r2', 'r3', 'r4'],
      'the newest three, in order',
    );
    assert.deepEqual(counts, { logged: 5, dropped: 2, stored: 3 });
  });

  it('without a table, only logs', async () => {
    const { logger, records: lines } = captureLogs({ plain: true });
    const { counts, metrics } = counter();
    const audit = new AuditTrail({ logger, metrics: metrics as never });
    audit.play(play(1));
    await audit.close();
    assert.equal(lines.filter((l) => l.event === 'play').length, 1);
    assert.deepEqual(counts, { logged: 1 });
  });
});
