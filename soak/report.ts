/** The soak's report as text: one Markdown table of latency and throughput per request kind, and what failed. */
import { fmtBytes, fmtMs, fmtNum } from '../bench/lib/stats.js';
import type { KindStats, SoakReport } from './soak.js';

function row(k: KindStats): string {
  const cells = [
    k.kind,
    fmtNum(k.requests),
    fmtNum(k.joined),
    fmtNum(k.failed),
    fmtMs(k.ttfbMs.p50),
    fmtMs(k.ttfbMs.p99),
    fmtMs(k.ttlbMs.p50),
    fmtMs(k.ttlbMs.p99),
    fmtNum(k.reqPerS, k.reqPerS >= 100 ? 0 : 1),
    fmtNum(k.bytesPerS / 1e6, 1),
  ];
  return `| ${cells.join(' | ')} |`;
}

/** The command line that runs the soak with these options. */
export function soakCommand(options: SoakReport['options']): string {
  return `npm run soak -- --duration ${options.durationS} --concurrency ${options.concurrency} --seed ${options.seed} --workers ${options.workers}${options.entry === 'source' ? ' --source' : ''}`;
}

export function renderSoak(report: SoakReport): string {
  const { options, upstream, recordings } = report;
  const lines = [
    `${soakCommand(options)}: ${report.passed ? 'passed' : 'FAILED'}`,
    '',
    `- ${options.concurrency} clients for ${options.durationS} s (${report.elapsedS.toFixed(1)} s until the last response), recgate --workers ${options.workers}, seed ${options.seed}.`,
    `- Upstream: recgate emulator at ${upstream.ttfbMs} ms to first byte and ${fmtBytes(upstream.bandwidth)}/s per response; ${fmtNum(recordings.requested)} recordings requested (${fmtBytes(recordings.requestedBytes)}; ${fmtNum(recordings.created - recordings.requested)} more created but not reached), fetched with ${fmtNum(upstream.mediaRequests)} media requests (${fmtBytes(upstream.mediaBytes)}).`,
    `- ${report.machine.cpu}, ${report.machine.cores} cores, Node ${report.machine.node}, shared by the clients, recgate, the emulator and anything else running: load average ${report.machine.loadBefore.toFixed(1)} when the clock started, ${report.machine.loadAfter.toFixed(1)} at the end.`,
    `- Worker pids ${report.workerPids.before.join(', ')} before the load, ${report.workerPids.after.join(', ')} after.`,
    "- TTFB: to the first body byte (to the headers when there is no body); TTLB: to the last byte (to going away, for disconnects). In flight: requests sent while the recording's first GET was still running, which joined its download. Latencies over requests that passed; MB/s counts every body byte received.",
    '',
    '| kind | requests | in flight | failed | TTFB p50 | TTFB p99 | TTLB p50 | TTLB p99 | req/s | MB/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...report.kinds.map(row),
    row(report.total),
  ];
  const joins = report.kinds.filter((k) => k.joined > 0);
  if (joins.length > 0) {
    lines.push(
      '',
      'Time to first byte of requests that joined a download in flight, and of the same kind once the recording was fetched:',
      '',
      '| kind | in flight | TTFB p50 | TTFB p99 | fetched | TTFB p50 | TTFB p99 |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...joins.map((k) => {
        const cells = [
          k.kind,
          fmtNum(k.ttfbJoinedMs.count),
          fmtMs(k.ttfbJoinedMs.p50),
          fmtMs(k.ttfbJoinedMs.p99),
          fmtNum(k.ttfbFetchedMs.count),
          fmtMs(k.ttfbFetchedMs.p50),
          fmtMs(k.ttfbFetchedMs.p99),
        ];
        return `| ${cells.join(' | ')} |`;
      }),
    );
  }
  if (!report.passed) lines.push('', 'Failures:', ...report.failures.map((f) => `- ${f}`));
  return `${lines.join('\n')}\n`;
}
