/**
 * `recgate stats`: the recording cache at a glance, from the cache index in the call log's database (no
 * directory scan, nothing changed):
 * - size and file count: the index's totals row;
 * - hit ratio: hits / (hits + downloads), where a hit is a play a finished local file served and a download
 *   one this cache started at Twilio (prefetches included); joining a download already in flight counts as
 *   neither. Gateways write the counts in batches (every few seconds, and when they stop), so the last
 *   seconds may be missing;
 * - the top recordings by hits (`--top`, default 10), with their call's business and recording.
 *
 * `--json` prints one JSON object instead. Exit 0; 1 when the database cannot be read; 2 for bad usage.
 */
import { openCallLog, parseDatabaseUrl } from '../call-log/index.js';
import type { ConfigInput } from '../config/config.js';
import { openCacheIndex } from '../recordings/cache-index/open.js';
import { ownerOfKey } from '../recordings/variant.js';
import type { CallSid } from '../sid.js';
import { adminConfig, type CommandIo, EXIT_FAILED, EXIT_OK, messageOf } from './admin.js';
import { formatBytes } from './doctor.js';

export interface StatsReport {
  files: number;
  bytes: number;
  hits: number;
  downloads: number;
  /** hits / (hits + downloads), or `null` before the first play. */
  hit_ratio: number | null;
  top: Array<{
    call_sid: string;
    business_id: string | null;
    recording_sid: string | null;
    size: number;
    hits: number;
    last_played_at: string;
  }>;
}

export async function runStats(
  options: { top: number; json: boolean; flags: ConfigInput; io: CommandIo },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const { io } = options;
  let report: StatsReport;
  try {
    report = await readStats(options.flags, options.top, env);
  } catch (err) {
    io.err(`recgate stats: ${messageOf(err)}`);
    return EXIT_FAILED;
  }
  if (options.json) io.out(JSON.stringify(report));
  else for (const line of describe(report)) io.out(line);
  return EXIT_OK;
}

async function readStats(flags: ConfigInput, top: number, env: NodeJS.ProcessEnv): Promise<StatsReport> {
  const config = adminConfig(flags, env);
  const callLog = await openCallLog(config.databaseUrl, config.dataDir);
  try {
    const index = await openCacheIndex(parseDatabaseUrl(config.databaseUrl, config.dataDir));
    if (index === undefined) throw new Error('an in-memory database keeps no cache index');
    try {
      const [totals, counts, files] = await Promise.all([index.totals(), index.playCounts(), index.top(top)]);
      const plays = counts.hits + counts.downloads;
      const rows: StatsReport['top'] = [];
      for (const file of files) {
        // A variant's row (`CA….dual`, `CA….wav`) belongs to its owner call.
        const call = await callLog.get(ownerOfKey(file.callSid) as CallSid);
        rows.push({
          call_sid: file.callSid,
          business_id: call?.businessId ?? null,
          recording_sid: call?.recordingSid ?? null,
          size: file.size,
          hits: file.hits,
          last_played_at: new Date(file.lastPlayedMs).toISOString(),
        });
      }
      return {
        ...totals,
        ...counts,
        hit_ratio: plays === 0 ? null : counts.hits / plays,
        top: rows,
      };
    } finally {
      await index.close();
    }
  } finally {
    await callLog.close();
  }
}

function describe(report: StatsReport): string[] {
  const ratio = report.hit_ratio === null ? 'no plays yet' : `${(report.hit_ratio * 100).toFixed(1)}%`;
  const lines = [
    `cache      ${formatBytes(report.bytes)} in ${report.files} file${report.files === 1 ? '' : 's'}`,
    `hit ratio  ${ratio} (${report.hits} hits, ${report.downloads} downloads)`,
  ];
  if (report.top.length === 0) return lines;
  lines.push(`top ${report.top.length} by hits:`);
  lines.push(
    `  ${'hits'.padStart(6)}  ${'size'.padStart(10)}  ${'call'.padEnd(34)}  ${'business'.padEnd(16)}  recording`,
  );
  for (const r of report.top) {
    lines.push(
      `  ${String(r.hits).padStart(6)}  ${formatBytes(r.size).padStart(10)}  ${r.call_sid.padEnd(34)}  ${(
        r.business_id ?? '-'
      ).padEnd(16)}  ${r.recording_sid ?? '-'}`,
    );
  }
  return lines;
}
