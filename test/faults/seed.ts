/**
 * Seeds and repeat counts for the fault tests. `npm test` runs each fault test at its default count with
 * the default seed; `npm run test:faults -- --repeat N --seed S` (test/faults/run.ts) runs them N times
 * from seed S. Every random choice a fault test makes (where to kill, what to cut) comes from
 * {@link seededRandom}, and the seed is printed in the test's diagnostics, so a failure can be replayed.
 */

/** The seed of this run: `FAULT_SEED`, else a fixed default. */
export function faultSeed(): number {
  const raw = process.env.FAULT_SEED;
  if (raw === undefined || raw === '') return 20261130;
  const seed = Number(raw);
  if (!Number.isSafeInteger(seed)) throw new Error(`FAULT_SEED must be an integer, not ${raw}`);
  return seed;
}

/** How many repetitions a fault test runs: `FAULT_REPEAT`, else the test's own default. */
export function faultRepeat(fallback: number): number {
  const raw = process.env.FAULT_REPEAT;
  if (raw === undefined || raw === '') return fallback;
  const repeat = Number(raw);
  if (!Number.isSafeInteger(repeat) || repeat < 1)
    throw new Error(`FAULT_REPEAT must be a positive integer, not ${raw}`);
  return repeat;
}

/** A deterministic generator of numbers in [0, 1) (mulberry32), one stream per seed and label. */
export function seededRandom(seed: number, label = ''): () => number {
  let state = seed >>> 0;
  for (const char of label) state = Math.imul(state ^ char.charCodeAt(0), 0x9e3779b1) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max] from `random`. */
export function between(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}
