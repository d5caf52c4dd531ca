/** What every scenario receives from the harness: the upstream emulator, the load generator, the tools found. */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import type { Emulator } from '../../src/emulator/index.js';
import type { LoadgenProcess } from './loadgen.js';
import {
  basicAuth,
  type RecgateOptions,
  type RecgatePeer,
  type Recording,
  type UpstreamInfo,
} from './peers.js';

export type BenchMode = 'smoke' | 'default' | 'full';

export interface Tools {
  nginx?: string;
  varnish?: string;
  wrk?: string;
}

export interface BenchContext {
  mode: BenchMode;
  emulator: Emulator;
  upstream: UpstreamInfo;
  loadgen: LoadgenProcess;
  tools: Tools;
  /**
   * Starts `recgate serve` against this run's emulator, the way the run asked for: from the build or the
   * TypeScript sources, with the run's extra node flags (`--cpu-prof`). Resolves once recgate (and every worker)
   * answers; the caller stops it.
   */
  startRecgate(
    options: Pick<RecgateOptions, 'workers' | 'name' | 'extraArgs' | 'scratchRoot'>,
  ): Promise<RecgatePeer>;
  /** A scratch directory that the harness removes at the end. */
  scratch: string;
  log(line: string): void;
}

/** The emulator's media path for a recording, as peers proxy it. */
export function upstreamPath(ctx: Pick<BenchContext, 'upstream'>, recording: Recording): string {
  return `/2010-04-01/Accounts/${ctx.upstream.accountSid}/Recordings/${recording.recording_sid}.mp3`;
}

export function upstreamHeaders(ctx: Pick<BenchContext, 'upstream'>): Record<string, string> {
  return { authorization: basicAuth(ctx.upstream) };
}

/** Fetches a recording's bytes from the emulator (at its current throttle) and writes them to `dir/{call_sid}.mp3` (for the static peers). */
export async function writeRecordingFile(
  ctx: Pick<BenchContext, 'upstream'>,
  recording: Recording,
  dir: string,
): Promise<string> {
  const res = await request(`${ctx.upstream.url}${upstreamPath(ctx, recording)}`, {
    headers: upstreamHeaders(ctx),
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode !== 200 || bytes.length !== recording.size) {
    throw new Error(
      `emulator answered ${res.statusCode} with ${bytes.length} bytes for ${recording.recording_sid}`,
    );
  }
  const file = path.join(dir, `${recording.call_sid}.mp3`);
  await writeFile(file, bytes);
  return file;
}

export const MB = 1_000_000;

export function sizeLabel(bytes: number): string {
  return bytes >= MB ? `${+(bytes / MB).toFixed(1)} MB` : `${Math.round(bytes / 1000)} kB`;
}

/**
 * The upstream's own first-byte time right now: the median of 3 concurrent 16 KB ranges of `probe` (a recording
 * of its own, so that the run's counters stay clean), taken right before a run.
 */
export async function probeUpstreamTtfb(ctx: BenchContext, probe: Recording): Promise<number> {
  const ref = await ctx.loadgen.run({
    origin: ctx.upstream.url,
    path: upstreamPath(ctx, probe),
    headers: upstreamHeaders(ctx),
    concurrency: 3,
    range: { start: 0, end: 16_383 },
    size: probe.size,
  });
  return ref.ttfbMs.p50;
}

/** Creates a completed recording of exactly `bytes` bytes in the emulator. */
export async function newRecording(ctx: Pick<BenchContext, 'emulator'>, bytes: number): Promise<Recording> {
  const created = await ctx.emulator.createRecording({ bytes });
  if (!created.recording_sid || created.sha256 === null || created.size !== bytes) {
    throw new Error(`emulator did not create a ${bytes}-byte recording: ${JSON.stringify(created)}`);
  }
  return {
    call_sid: created.call_sid,
    recording_sid: created.recording_sid,
    size: created.size,
    sha256: created.sha256,
  };
}
