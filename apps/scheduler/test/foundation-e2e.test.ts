import { describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import { agentSource, onSharedRedis, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();

const agentsDir = writeAgentsDir({
  'heartbeat.ts': agentSource({ name: 'heartbeat', schedule: { cron: '* * * * * *' }, priority: 1 }, 'await new Promise((r) => setTimeout(r, 20)); return { ok: true };'),
  'doomed.mjs': agentSource({ name: 'doomed', schedule: { cron: '* * * * * *' }, retry: { attempts: 1 } }, "throw new Error('doomed to fail');"),
  'downstream.ts': agentSource({ name: 'downstream', dependsOn: ['heartbeat'] }),
});

describe('scheduler and worker processes', () => {
  it('run cron ticks and dead-letter failures, visible in /api/metrics', async () => {
    const prefix = uniquePrefix();
    const port = await freePort();
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port) };
    const scheduler = startApp('scheduler', env);
    const worker = startApp('worker', env);
    await scheduler.waitForLog(/dashboard on/);

    const metrics = await waitFor(
      async () => {
        const body = (await (await fetch(`http://127.0.0.1:${port}/api/metrics`)).json()) as any;
        return body.agents.heartbeat.successes >= 2 && body.deadLetterQueueSize >= 1 ? body : undefined;
      },
      { timeoutMs: 20_000, what: 'completed runs and a DLQ entry in /api/metrics' },
    );
    expect(metrics.agents.heartbeat).toMatchObject({ priority: 1, dependencyDepth: 0 });
    expect(metrics.agents.heartbeat.p50).toBeGreaterThanOrEqual(20);
    expect(metrics.agents.heartbeat.p99).toBeGreaterThanOrEqual(metrics.agents.heartbeat.p50);
    expect(metrics.agents.downstream.dependencyDepth).toBe(1);
    expect(metrics.deadLetterQueue[0]).toMatchObject({ agent: 'doomed', error: 'doomed to fail', attemptsMade: 1 });
    expect(metrics.system.memory).toEqual(expect.objectContaining({ heapPercent: expect.any(Number), rssMB: expect.any(Number) }));

    scheduler.kill('SIGTERM');
    worker.kill('SIGTERM');
    expect(await scheduler.exited).toBe(0);
    expect(await worker.exited).toBe(0);
  }, 60_000);

  const cyclic = writeAgentsDir({
    'a.ts': agentSource({ name: 'a', dependsOn: ['b'], schedule: { cron: '* * * * *' } }),
    'b.ts': agentSource({ name: 'b', dependsOn: ['a'] }),
    'c.ts': agentSource({ name: 'c', priority: 9 }),
  });

  it('refuses an invalid registry with exit code 2, printing the cycle, and writes nothing under its prefix', async () => {
    const prefix = uniquePrefix();
    const client = redis.client();
    const scheduler = startApp('scheduler', { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: cyclic, PORT: String(await freePort()) });
    expect(await scheduler.exited).toBe(2);
    expect(scheduler.output()).toContain('dependency cycle: a → b → a');
    expect(scheduler.output()).toContain('priority must be 1 (critical), 2 (important) or 3 (normal), got 9');
    expect(scheduler.output()).not.toMatch(/\n\s+at /); // no stack trace
    expect(await client.keys(`*${prefix}*`)).toEqual([]);
  }, 30_000);

  it.skipIf(onSharedRedis('counts every key of its Redis'))(
    'writes no key at all, under any prefix, for an invalid registry',
    async () => {
      const client = redis.client();
      const keysBefore = await client.dbsize();
      const scheduler = startApp('scheduler', { REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: cyclic, PORT: String(await freePort()) });
      expect(await scheduler.exited).toBe(2);
      expect(await client.dbsize()).toBe(keysBefore);
    },
    30_000,
  );

  it('refuses bad configuration with one line and exit code 2', async () => {
    const worker = startApp('worker', { REDIS_URL: redis.url, WORKER_CONCURRENCY: 'ten' });
    expect(await worker.exited).toBe(2);
    expect(worker.output().trim()).toBe('werkpilot worker: WORKER_CONCURRENCY must be a positive integer, got "ten"');
  }, 30_000);
});
