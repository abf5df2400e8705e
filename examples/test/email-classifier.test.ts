import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AgentContext, AgentDefinition } from '@werkpilot/shared/agent';

/**
 * The demo's flaky agent over an hour of its ticks (720, one per 5 s), attempts retried as the
 * worker would: how many failed attempts (circuit-breaker restarts) and dead-lettered runs it makes.
 */
/** An hour of cron ticks from a whole hour on, as the job scheduler names their runs. */
const HOUR_START = Date.UTC(2026, 0, 1, 9);

async function anHourOfTicks(): Promise<{ restarts: number; deadLettered: number; retriedThenSucceeded: number; maxRestartsPerHour: number; restartsInFirstTwoMinutes: number }> {
  vi.resetModules();
  const agent = (await import('../agents/email-classifier.ts')).default as AgentDefinition;
  const attempts = agent.retry!.attempts!;
  let restarts = 0;
  let deadLettered = 0;
  let retriedThenSucceeded = 0;
  let restartsInFirstTwoMinutes = 0;
  for (let tick = 0; tick < 720; tick += 1) {
    for (let attempt = 1; attempt <= attempts; attempt += 1) {
      const ctx = {
        runId: `repeat:email-classifier:${HOUR_START + tick * 5000}`,
        attempt,
        signal: new AbortController().signal,
        log: { info: () => undefined },
        data: undefined,
      } as unknown as AgentContext;
      const outcome = Promise.resolve(agent.run(ctx)).then(
        () => 'ok' as const,
        () => 'failed' as const,
      );
      await vi.advanceTimersByTimeAsync(250);
      if ((await outcome) === 'ok') {
        if (attempt > 1) retriedThenSucceeded += 1;
        break;
      }
      restarts += 1;
      if (tick < 24) restartsInFirstTwoMinutes += 1;
      if (attempt === attempts) deadLettered += 1;
    }
  }
  return { restarts, deadLettered, retriedThenSucceeded, maxRestartsPerHour: agent.maxRestartsPerHour!, restartsInFirstTwoMinutes };
}

describe('the demo email-classifier', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllEnvs();
  });

  it('shows dead-lettered runs and retries now and then, but keeps its circuit closed', async () => {
    vi.stubEnv('DEMO_FAIL_RATE', undefined);
    const hour = await anHourOfTicks();
    // One tick in 120 (the first, which is also the process's first run); one run in 45 retried.
    expect(hour).toMatchObject({ deadLettered: 6, retriedThenSucceeded: 16, restarts: 28 });
    expect(hour.restarts).toBeLessThanOrEqual(hour.maxRestartsPerHour);
  });

  it('opens its circuit within two minutes with DEMO_FAIL_RATE=1', async () => {
    vi.stubEnv('DEMO_FAIL_RATE', '1');
    const hour = await anHourOfTicks();
    expect(hour.restarts).toBe(720 * 2);
    expect(hour.restartsInFirstTwoMinutes).toBeGreaterThan(hour.maxRestartsPerHour);
  });
});
