import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterQueue, buildRegistry, createLogger, reconcileJobSchedulers, triggerRun, type AgentDefinition } from '@werkpilot/shared';
import { createAgentCluster, useTestRedis, waitFor, type AgentCluster } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };

let current: AgentCluster | undefined;
afterEach(async () => {
  await current?.close();
  current = undefined;
});

async function cluster(agents: Partial<AgentDefinition>[]): Promise<AgentCluster> {
  current = await createAgentCluster(redis, agents, { log });
  return current;
}

describe('running agents', () => {
  it('runs a cron-scheduled agent within a second of its tick', async () => {
    const starts: { runId: string; at: number }[] = [];
    const c = await cluster([
      {
        name: 'ticker',
        schedule: { cron: '* * * * * *' },
        run: async (ctx) => {
          starts.push({ runId: ctx.runId, at: Date.now() });
        },
      },
    ]);
    // The worker is ready before the first tick is planned, so no tick is late for the worker's own start.
    await c.startWorker();
    await reconcileJobSchedulers({ queue: c.queues.agents, registry: c.registry, retention, log });
    await waitFor(() => starts.length >= 2, { timeoutMs: 10_000, what: 'two cron runs' });
    for (const { runId, at } of starts) {
      const tick = Number(runId.split(':').at(-1));
      expect(runId).toMatch(/^repeat:ticker:\d+$/);
      expect(at - tick).toBeGreaterThanOrEqual(0);
      expect(at - tick).toBeLessThan(1000);
    }
  });

  it('retries a failing agent with growing delays and dead-letters it with its error, data and attempts', async () => {
    const attempts: number[] = [];
    const c = await cluster([
      {
        name: 'flaky',
        retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 150 } },
        run: async () => {
          attempts.push(Date.now());
          throw new Error('upstream said 503');
        },
      },
    ]);
    await c.startWorker({ id: 'worker-a' });
    const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'flaky', { data: { batch: 7 } });
    const dlq = new DeadLetterQueue(c.queues.agents);
    await waitFor(async () => (await dlq.size()) === 1, { what: 'the run in the DLQ' });

    expect(attempts).toHaveLength(3);
    // Each retry waited at least its delay (150 ms, then 300 ms; the agent:retrying events below say
    // which delays were chosen). Load can only lengthen a wait, so no upper bound is asserted.
    const gaps = [attempts[1]! - attempts[0]!, attempts[2]! - attempts[1]!];
    expect(gaps[0]).toBeGreaterThanOrEqual(140);
    expect(gaps[1]).toBeGreaterThanOrEqual(290);

    const entry = await dlq.get(runId);
    expect(entry).toMatchObject({ id: runId, agent: 'flaky', error: 'upstream said 503', data: { batch: 7 }, attemptsMade: 3, workerId: 'worker-a' });
    expect(entry.stacktrace.length).toBeGreaterThan(0);
    expect(entry.failedAt).not.toBeNull();

    const state = await c.state.get('flaky');
    expect(state).toMatchObject({ runs: 3, failures: 3, successes: 0, consecutiveFailures: 3, lastError: 'upstream said 503' });
    await waitFor(() => c.events.some((e) => e.type === 'agent:dlq'), { what: 'agent:dlq event' });
    expect(c.events.filter((e) => e.type === 'agent:retrying').map((e) => e.data.delayMs)).toEqual([150, 300]);
    expect(c.events.filter((e) => e.type === 'agent:failed')).toHaveLength(3);
  });

  it('dead-letters a job naming an unknown agent and keeps working', async () => {
    let ran = 0;
    const c = await cluster([{ name: 'known', run: async () => void ran++ }]);
    const worker = await c.startWorker();
    const ghost = await c.queues.agents.add('ghost', { agent: 'ghost', trigger: 'manual' }, { attempts: 3 });
    await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'known');
    await waitFor(() => ran === 1, { what: 'the known agent to run' });
    const dlq = new DeadLetterQueue(c.queues.agents);
    await waitFor(async () => (await dlq.size()) === 1, { what: 'the ghost run in the DLQ' });
    expect(await dlq.get(ghost.id!)).toMatchObject({ error: 'unknown agent ghost', attemptsMade: 1 });
    expect(worker.isRunning()).toBe(true);
  });

  it('aborts the signal the agent sees when the run times out', async () => {
    let seen: { aborted: boolean; reason: string } | undefined;
    const c = await cluster([
      {
        name: 'slow',
        timeoutMs: 200,
        retry: { attempts: 1 },
        run: (ctx) =>
          new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => {
              seen = { aborted: ctx.signal.aborted, reason: (ctx.signal.reason as Error).message };
              reject(ctx.signal.reason);
            });
          }),
      },
    ]);
    await c.startWorker();
    const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'slow');
    const dlq = new DeadLetterQueue(c.queues.agents);
    await waitFor(async () => (await dlq.size()) === 1, { what: 'the timed-out run in the DLQ' });
    expect(seen).toEqual({ aborted: true, reason: 'timeout after 200 ms' });
    expect((await dlq.get(runId)).error).toBe('timeout after 200 ms');
    await waitFor(() => c.events.some((e) => e.type === 'agent:timeout' && e.data.timeoutMs === 200), { what: 'agent:timeout' });
  });

  it('starts priority 1 runs before waiting priority 3 runs, FIFO within a priority', async () => {
    const order: string[] = [];
    const record = (name: string) => async (ctx: { data: unknown }) => void order.push(`${name}#${(ctx.data as { n: number }).n}`);
    const c = await cluster([
      { name: 'normal', priority: 3, run: record('normal') },
      { name: 'important', priority: 2, run: record('important') },
      { name: 'critical', priority: 1, run: record('critical') },
    ]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    for (let n = 0; n < 5; n++) await triggerRun(deps, 'normal', { data: { n } });
    for (let n = 0; n < 3; n++) await triggerRun(deps, 'important', { data: { n } });
    for (let n = 0; n < 3; n++) await triggerRun(deps, 'critical', { data: { n } });
    await c.startWorker({ concurrency: 1 });
    await waitFor(() => order.length === 11, { what: 'all 11 runs' });
    expect(order).toEqual(['critical#0', 'critical#1', 'critical#2', 'important#0', 'important#1', 'important#2', 'normal#0', 'normal#1', 'normal#2', 'normal#3', 'normal#4']);
  });

  it('loses no count when two workers update the same agent concurrently', async () => {
    const c = await cluster([{ name: 'counter', run: async () => 'ok' }]);
    await c.queues.agents.addBulk(
      Array.from({ length: 1000 }, () => ({ name: 'counter', data: { agent: 'counter', trigger: 'manual' as const }, opts: { priority: 3, removeOnComplete: true } })),
    );
    await Promise.all([c.startWorker({ concurrency: 10, id: 'w1' }), c.startWorker({ concurrency: 10, id: 'w2' })]);
    await waitFor(async () => (await c.state.get('counter')).runs === 1000, { timeoutMs: 60_000, what: '1000 recorded runs' });
    const state = await c.state.get('counter');
    expect(state).toMatchObject({ runs: 1000, successes: 1000, failures: 0, samples: 1000 });
    expect(state.p50).not.toBeNull();
  }, 90_000);
});

describe('job schedulers', () => {
  it('adds one per scheduled agent, leaves unchanged ones alone and removes agents that left', async () => {
    const agents: Partial<AgentDefinition>[] = [
      { name: 'a', schedule: { cron: '0 * * * *' } },
      { name: 'b', schedule: { cron: '*/5 * * * *', tz: 'Europe/Zurich' }, priority: 1 },
      { name: 'manual-only' },
    ];
    const c = await cluster(agents);
    const queue = c.queues.agents;
    expect(await reconcileJobSchedulers({ queue, registry: c.registry, retention, log })).toMatchObject({ added: ['a', 'b'], removed: [] });
    const b = await queue.getJobScheduler('b');
    expect(b).toMatchObject({ pattern: '*/5 * * * *', tz: 'Europe/Zurich' });
    expect(b?.template?.opts).toMatchObject({ priority: 1, attempts: 3 });

    expect(await reconcileJobSchedulers({ queue, registry: c.registry, retention, log })).toMatchObject({ added: [], updated: [], unchanged: ['a', 'b'] });

    const changed = buildRegistry([{ definition: { name: 'a', schedule: { cron: '30 * * * *' }, run: async () => null }, source: '/t/a.ts' }]);
    expect(await reconcileJobSchedulers({ queue, registry: changed, retention, log })).toMatchObject({ updated: ['a'], removed: ['b'] });
    expect(await queue.getJobScheduler('b')).toBeUndefined();
    expect((await queue.getJobSchedulers()).map((s) => s.key)).toEqual(['a']);
    const delayed = await queue.getDelayed();
    expect(delayed.map((j) => j.name)).toEqual(['a']);
  });
});
