import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterQueue, ROLLUP_RETENTION_HOURS, createLogger, quantile, readAgentRollups, rollupKey, rollupSweptKey, sweepRollups, triggerRun } from '@werkpilot/shared';
import { createAgentCluster, useTestRedis, waitFor, type AgentCluster } from '@werkpilot/test-support';

/** The per-minute rollups the completion script writes (run-rollups.ts), read back as the agent page's charts. */

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };
const HOUR = 3_600_000;

let current: AgentCluster | undefined;
afterEach(async () => {
  await current?.close();
  current = undefined;
});

describe('run rollups', () => {
  it('counts every attempt by outcome in its minute, with the duration in its bucket', async () => {
    current = await createAgentCluster(
      redis,
      [
        { name: 'steady', run: async () => new Promise((resolve) => setTimeout(resolve, 30)) },
        {
          name: 'shaky',
          retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 10 } },
          run: async () => {
            throw new Error('nope');
          },
        },
      ],
      { log },
    );
    const c = current;
    await c.startWorker();
    for (let i = 0; i < 4; i++) {
      const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'steady');
      await waitFor(async () => (await c.queues.agents.getJobState(runId)) === 'completed', { what: 'steady run' });
    }
    await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'shaky');
    await waitFor(async () => (await new DeadLetterQueue(c.queues.agents).size()) === 1, { what: 'shaky in the DLQ' });

    const now = Date.now();
    const steady = await readAgentRollups(c.redis, c.keys, 'steady', now);
    expect(steady.lastHour).toHaveLength(60);
    expect(steady.lastDay).toHaveLength(24);
    expect(steady.lastWeek).toHaveLength(ROLLUP_RETENTION_HOURS);
    const sum = (points: typeof steady.lastHour, field: 'success' | 'failure') => points.reduce((n, p) => n + p[field], 0);
    expect(sum(steady.lastHour, 'success')).toBe(4);
    expect(sum(steady.lastDay, 'success')).toBe(4);
    expect(sum(steady.lastWeek, 'success')).toBe(4);
    // 30 ms sleeps land in the 25–50 ms bucket: the estimate stays inside it.
    const busy = steady.lastHour.find((p) => p.success > 0)!;
    expect(busy.p50).toBeGreaterThanOrEqual(25);
    expect(busy.p99).toBeLessThanOrEqual(50);

    const shaky = await readAgentRollups(c.redis, c.keys, 'shaky', now);
    // Both attempts failed: each is a failure in the rollup, the retried one included.
    expect(sum(shaky.lastHour, 'failure')).toBe(2);
    expect(sum(shaky.lastHour, 'success')).toBe(0);
    // The hour hash holds only `<minute>:<outcome><bucket>` fields.
    const hash = await c.redis.hgetall(rollupKey(c.keys, 'steady', Math.floor(now / HOUR)));
    const previous = await c.redis.hgetall(rollupKey(c.keys, 'steady', Math.floor(now / HOUR) - 1));
    const fields = Object.entries({ ...previous, ...hash });
    expect(fields.every(([field]) => /^\d{1,2}:s\d+$/.test(field))).toBe(true);
    expect(fields.reduce((n, [, v]) => n + Number(v), 0)).toBe(4);
  });

  it('sweeps hour keys past the retention, resuming each night where the last sweep stopped', async () => {
    current = await createAgentCluster(redis, [{ name: 'old', run: async () => 1 }], { log });
    const c = current;
    const now = Date.UTC(2026, 0, 10, 12, 30);
    const hour = Math.floor(now / HOUR);
    const keyOf = (agent: string, h: number) => rollupKey(c.keys, agent, h);
    const kept = hour - ROLLUP_RETENTION_HOURS + 1;
    for (const agent of ['old', 'older']) {
      for (const h of [kept, kept - 1, kept - 24 * 20]) await c.redis.hset(keyOf(agent, h), '5:s3', 2);
    }
    expect(await sweepRollups(c.redis, c.keys, ['old', 'older'], now)).toBe(4);
    expect(await c.redis.exists(keyOf('old', kept), keyOf('older', kept))).toBe(2);
    expect(await c.redis.exists(keyOf('old', kept - 1), keyOf('old', kept - 24 * 20), keyOf('older', kept - 1))).toBe(0);
    expect(Number(await c.redis.get(rollupSweptKey(c.keys)))).toBe(kept);
    // The next night deletes the day that aged out (both agents' hour `kept`, and `kept + 10`), and looks no further back.
    await c.redis.hset(keyOf('old', kept + 10), '1:f', 1);
    await c.redis.hset(keyOf('old', kept + 24), '1:f', 1);
    await c.redis.hset(keyOf('old', kept - 30), '1:f', 1);
    expect(await sweepRollups(c.redis, c.keys, ['old', 'older'], now + 24 * HOUR)).toBe(3);
    expect(await c.redis.exists(keyOf('old', kept + 24))).toBe(1);
    expect(await c.redis.exists(keyOf('old', kept - 30))).toBe(1);
    expect(Number(await c.redis.get(rollupSweptKey(c.keys)))).toBe(kept + 24);
  });

  it('estimates quantiles within the bucket, like histogram_quantile', () => {
    const buckets = new Array(16).fill(0);
    buckets[3] = 10; // 50–100 ms
    expect(quantile(buckets, 0.5)).toBe(75);
    expect(quantile(buckets, 1)).toBe(100);
    buckets[15] = 10; // over 600 s: reported as 600 s
    expect(quantile(buckets, 0.99)).toBe(600_000);
    expect(quantile(new Array(16).fill(0), 0.5)).toBeNull();
  });
});
