/** Helpers for the demo agents (files starting with `_` are not loaded as agents). */

/** Waits `min`–`max` ms, or rejects as soon as `signal` aborts. */
export function simulateWork(signal: AbortSignal, min: number, max: number): Promise<void> {
  const ms = min + Math.random() * (max - min);
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Probability (0–1) that the flaky demo agent fails an attempt; `DEMO_FAIL_RATE` overrides. */
export function demoFailRate(fallback: number): number {
  const value = Number(process.env.DEMO_FAIL_RATE);
  return Number.isFinite(value) && process.env.DEMO_FAIL_RATE !== undefined ? value : fallback;
}
