/**
 * Sizes and durations as operators write them: `10GiB`, `500MB`, `1048576`, `15%` (of the volume); `30d`,
 * `12h`, `90m`, `45s`. Pure helpers, validated where the configuration enters; each throws a TypeError whose
 * message names the option.
 */

/** A size in bytes, or a share of the volume that holds the recordings. */
export type SizeSetting = { bytes: number } | { percent: number };

const SIZE = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]i?b?|b)?\s*$/i;
const PERCENT = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/;
const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/i;

const POWERS: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5 };
const DURATION_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Reads a size: bytes with an optional unit (`B`; `kB`, `MB`, `GB`, `TB`, `PB` are powers of 1000; `KiB`,
 * `MiB`, `GiB`, `TiB`, `PiB` and the bare `K`, `M`, `G`, `T`, `P` are powers of 1024), or a percentage
 * `0 < p < 100`.
 */
export function parseSize(value: string, option: string): SizeSetting {
  const percent = PERCENT.exec(value);
  if (percent) {
    const p = Number(percent[1]);
    if (!(p > 0 && p < 100)) throw new TypeError(`${option} must be a percentage above 0 and below 100`);
    return { percent: p };
  }
  const size = SIZE.exec(value);
  if (!size) {
    throw new TypeError(`${option} must be bytes with an optional unit (10GiB, 500MB) or a percentage (15%)`);
  }
  const unit = (size[2] ?? 'b').toLowerCase();
  const base = unit === 'b' || unit.includes('i') || unit.length === 1 ? 1024 : 1000;
  const bytes = Math.round(Number(size[1]) * (unit === 'b' ? 1 : base ** POWERS[unit[0]!]!));
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new TypeError(`${option} must be above 0 bytes`);
  return { bytes };
}

/** Reads a duration: a number with `ms`, `s`, `m`, `h`, `d` or `w` (bare numbers are seconds); in ms. */
export function parseDuration(value: string, option: string): number {
  const m = DURATION.exec(value);
  if (!m) throw new TypeError(`${option} must be a duration such as 30d, 12h, 90m or 45s`);
  const ms = Math.round(Number(m[1]) * DURATION_MS[(m[2] ?? 's').toLowerCase()]!);
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new TypeError(`${option} must be a positive duration`);
  return ms;
}

/** The bytes a size stands for on a volume of `volumeBytes`. */
export function resolveSize(setting: SizeSetting, volumeBytes: number): number {
  return 'bytes' in setting ? setting.bytes : Math.floor((volumeBytes * setting.percent) / 100);
}

/** How a size reads in logs: `10737418240 bytes` or `15% of the volume`. */
export function describeSize(setting: SizeSetting): string {
  return 'bytes' in setting ? `${setting.bytes} bytes` : `${setting.percent}% of the volume`;
}
