/** Exact percentiles over a sample, by the nearest-rank method. */
export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

/** Nearest-rank percentile of an ascending-sorted array; null for an empty one. */
export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function percentiles(samples: readonly number[]): Percentiles {
  return percentilesOfSorted([...samples].sort((a, b) => a - b));
}

export function percentilesOfSorted(sorted: ArrayLike<number>): Percentiles {
  return {
    p50: percentileOfSorted(sorted, 50),
    p95: percentileOfSorted(sorted, 95),
    p99: percentileOfSorted(sorted, 99),
  };
}
