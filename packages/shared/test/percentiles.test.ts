import { describe, expect, it } from 'vitest';
import { percentiles } from '@werkpilot/shared';

describe('percentiles', () => {
  it('is null without samples', () => {
    expect(percentiles([])).toEqual({ p50: null, p95: null, p99: null });
  });

  it('uses the nearest-rank method over 1..100', () => {
    const samples = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentiles(samples)).toEqual({ p50: 50, p95: 95, p99: 99 });
  });

  it('gives the single sample for every percentile', () => {
    expect(percentiles([7])).toEqual({ p50: 7, p95: 7, p99: 7 });
  });

  it('reaches the maximum for p99 of a small sample', () => {
    expect(percentiles([1, 2, 3, 4, 1000])).toEqual({ p50: 3, p95: 1000, p99: 1000 });
  });
});
