import { percentileOfSorted } from '@werkpilot/shared';

/** A wall clock with sub-millisecond resolution, in ms since the epoch (comparable across workers of one process). */
export function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Nearest-rank percentiles of a sample (the same method the orchestrator uses for p50/p95/p99). */
export function summarise(samples: readonly number[]): { p50: number; p99: number; count: number } {
  if (samples.length === 0) throw new Error('no samples were collected');
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentileOfSorted(sorted, 50)!, p99: percentileOfSorted(sorted, 99)!, count: sorted.length };
}

export function median(values: readonly number[]): number {
  return summarise(values).p50;
}

/** Resolves when `count` calls of the returned `tick` have happened. */
export function countdown(count: number): { tick: () => void; done: Promise<void> } {
  let left = count;
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  if (left <= 0) resolve();
  return {
    tick: () => {
      left -= 1;
      if (left === 0) resolve();
    },
    done,
  };
}

/** Rejects with a message naming `what` when `promise` takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
