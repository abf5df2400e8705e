import { afterAll, describe, expect, it } from 'vitest';
import { AgentStateStore, createKeys, createQueues, freePort } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();

const agentsDir = writeAgentsDir({
  'each-second.ts': agentSource({ name: 'each-second', schedule: { cron: '* * * * * *' } }, 'return { ok: true };'),
  'every-other.ts': agentSource({ name: 'every-other', schedule: { cron: '*/2 * * * * *' } }, 'return { ok: true };'),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

const RESTARTS = 5;

describe('restarting the scheduler', () => {
  it(`${RESTARTS} times never duplicates a job scheduler or a cron run (one run per tick)`, async () => {
    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const client = redis.client();
    const queues = createQueues({ connection: client, keys });
    toClose.push(() => queues.close());
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(await freePort()) };
    const worker = startApp('worker', env);
    await worker.waitForLog(/worker online/);

    const startedAt = Date.now();
    for (let i = 0; i < RESTARTS; i++) {
      const scheduler = startApp('scheduler', env);
      await scheduler.waitForLog(/job schedulers reconciled/);
      const schedulers = await queues.agents.getJobSchedulers(0, -1);
      expect(schedulers.map((s) => s.key).sort()).toEqual(['each-second', 'every-other']);
      const seen = await queues.agents.getCompletedCount();
      await waitFor(async () => (await queues.agents.getCompletedCount()) > seen, { timeoutMs: 10_000, what: 'a cron run with this scheduler' });
      scheduler.kill('SIGTERM');
      expect(await scheduler.exited).toBe(0);
      expect(scheduler.output().match(/shutdown step \d\/6/g)).toEqual([1, 2, 3, 4, 5, 6].map((n) => `shutdown step ${n}/6`));
    }
    const elapsedTicks = Math.ceil((Date.now() - startedAt) / 1000) + 1;

    // Let anything already due finish, then compare runs with ticks.
    await waitFor(async () => (await queues.agents.getActiveCount()) === 0, { what: 'no active run' });
    const completed = await queues.agents.getCompleted(0, -1);
    for (const agent of ['each-second', 'every-other']) {
      const runs = completed.filter((j) => j.name === agent);
      const ticks = runs.map((j) => Number(/^repeat:[^:]+:(\d+)$/.exec(j.id!)?.[1]));
      expect(ticks.every((t) => Number.isFinite(t))).toBe(true);
      expect(new Set(ticks).size).toBe(ticks.length); // one run per tick
      expect(runs.length).toBeLessThanOrEqual(agent === 'each-second' ? elapsedTicks : Math.ceil(elapsedTicks / 2) + 1);
      const state = await new AgentStateStore({ redis: client, keys }).get(agent);
      expect(state.runs + state.skipped).toBe(runs.length); // no run executed twice
    }
    expect((await queues.agents.getJobSchedulers(0, -1)).length).toBe(2);

    worker.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  }, 90_000);
});
