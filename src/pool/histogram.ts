/**
 * Fixed-bucket duration histograms for a pool's transaction and wait times. A pool owns its
 * counts; observing is a few comparisons and one increment into a preallocated array (no
 * allocation), cheap enough for once per transaction. The metrics layer renders them.
 */

/**
 * Upper bounds of the buckets, in microseconds: 0.1 ms (Tessera's clock counts whole milliseconds,
 * so this is "no wait at all"), 1 ms, 5 ms, 10 ms, 50 ms, 100 ms, 500 ms, 1 s, 5 s.
 */
export const DURATION_BOUNDS_US: readonly number[] = [100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000];

/** Counts per bucket (not cumulative); the last slot counts what is above every bound. */
export type DurationCounts = number[];

export function zeroDurationCounts(): DurationCounts {
  return new Array<number>(DURATION_BOUNDS_US.length + 1).fill(0);
}

export function observeDuration(counts: DurationCounts, us: number): void {
  let i = 0;
  while (i < DURATION_BOUNDS_US.length && us > DURATION_BOUNDS_US[i]) i++;
  counts[i]++;
}

/**
 * The q-quantile (0..1) of what the counts describe, in microseconds, interpolated within its
 * bucket as Prometheus's histogram_quantile does; the open top bucket answers its lower bound.
 */
export function quantileUs(counts: readonly number[], q: number): number {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (seen + counts[i] >= rank && counts[i] > 0) {
      const lower = i === 0 ? 0 : DURATION_BOUNDS_US[i - 1];
      if (i === DURATION_BOUNDS_US.length) return lower;
      return lower + ((DURATION_BOUNDS_US[i] - lower) * (rank - seen)) / counts[i];
    }
    seen += counts[i];
  }
  return DURATION_BOUNDS_US[DURATION_BOUNDS_US.length - 1];
}
