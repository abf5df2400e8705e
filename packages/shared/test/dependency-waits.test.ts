import { describe, expect, it } from 'vitest';
import { DeadLetterQueue, reconcileJobSchedulers, triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, log, retention, sleep } from './_dependency-cluster.js';

const redis = useTestRedis();

describe('waiting for dependency runs of the same tick', () => {
  it('starts a dependent after its slow dependency of the same cron tick, with a concurrency-1 worker', async () => {
    // `<agent>@<tick>` -> when that run started and ended
    const spans = new Map<string, { start: number; end: number }>();
    const track = (name: string, ms: number) => async (ctx: { runId: string }) => {
      const start = Date.now();
      await sleep(ms);
      spans.set(`${name}@${ctx.runId.split(':')[2]}`, { start, end: Date.now() });
    };
    const c = await dependencyCluster(redis, [
      { name: 'crm-sync', schedule: { cron: '*/2 * * * * *' }, priority: 3, run: track('crm-sync', 500) },
      // Higher priority: the worker takes the dependent first, so it must park and give the slot back.
      { name: 'lead-scorer', schedule: { cron: '*/2 * * * * *' }, priority: 1, dependsOn: ['crm-sync'], run: track('lead-scorer', 10) },
    ]);
    await reconcileJobSchedulers({ queue: c.queues.agents, registry: c.registry, retention, log });
    await c.startWorker({ concurrency: 1 });
    const spanOf = (key: string) => spans.get(key);
    const tick = await waitFor(() => [...spans.keys()].map((k) => k.split('@')[1]).find((t) => t && spanOf(`crm-sync@${t}`) && spanOf(`lead-scorer@${t}`)), {
      timeoutMs: 15_000,
      what: 'both agents to run for one tick',
    });
    expect(spanOf(`lead-scorer@${tick}`)!.start).toBeGreaterThanOrEqual(spanOf(`crm-sync@${tick}`)!.end);
    // The spans are written inside the runs; each run's completion (and its event) follows.
    const completedOf = () => c.events.filter((e) => e.type === 'agent:completed' && String(e.data.runId).endsWith(`:${tick}`));
    await waitFor(() => completedOf().length === 2, { what: 'both runs of the tick to complete' });
    expect(completedOf().map((e) => e.agent)).toEqual(['crm-sync', 'lead-scorer']);
  });

  it('runs a diamond dependent once, after both of its dependencies', async () => {
    const finished: Record<string, number> = {};
    const starts: string[] = [];
    const c = await dependencyCluster(redis, [
      {
        name: 'a',
        run: async () => {
          finished.a = Date.now();
        },
      },
      {
        name: 'b',
        dependsOn: ['a'],
        run: async () => {
          await sleep(150);
          finished.b = Date.now();
        },
      },
      {
        name: 'c',
        dependsOn: ['a'],
        run: async () => {
          await sleep(300);
          finished.c = Date.now();
        },
      },
      { name: 'd', dependsOn: ['b', 'c'], run: async () => void starts.push(`d@${Date.now()}`) },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 2 }), c.startWorker({ id: 'w2', concurrency: 2 })]);
    await c.addTick(1_000, ['d', 'c', 'b', 'a']);
    await c.completedRun('repeat:d:1000', 'd to complete');
    expect(starts).toHaveLength(1);
    const dStart = Number(starts[0]!.slice(2));
    expect(dStart).toBeGreaterThanOrEqual(Math.max(finished.b!, finished.c!));
    expect(finished.b).toBeGreaterThanOrEqual(finished.a!);
  });

  it('promotes each waiting dependent exactly once when its dependencies finish on different workers at the same moment (250 ticks)', async () => {
    const ITERATIONS = 250;
    const dStarts = new Map<string, number>();
    const finished = new Map<string, number>();
    let doubleStarts = 0;
    // a and b of one tick wait for each other, then finish together. Every worker has one slot, so
    // both can be running at once only on two different workers (checked below from the results).
    // No time limit: a barrier that cannot be met hangs the tick, and the wait for d fails.
    const gates = new Map<string, { arrived: number; release: () => void; released: Promise<void> }>();
    const barrier = (tick: string) => {
      let entry = gates.get(tick);
      if (!entry) {
        let release!: () => void;
        const released = new Promise<void>((r) => (release = r));
        entry = { arrived: 0, release, released };
        gates.set(tick, entry);
      }
      entry.arrived += 1;
      if (entry.arrived === 2) entry.release();
      return entry.released;
    };
    const dependency = (name: string) => async (ctx: { runId: string }) => {
      const tick = ctx.runId.split(':')[2]!;
      await barrier(tick);
      finished.set(`${name}@${tick}`, Date.now());
    };
    const c = await dependencyCluster(redis, [
      { name: 'a', run: dependency('a') },
      { name: 'b', run: dependency('b') },
      {
        name: 'd',
        dependsOn: ['a', 'b'],
        run: async (ctx) => {
          const tick = ctx.runId.split(':')[2]!;
          if (dStarts.has(tick)) doubleStarts += 1;
          dStarts.set(tick, Date.now());
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 1 }), c.startWorker({ id: 'w2', concurrency: 1 }), c.startWorker({ id: 'w3', concurrency: 1 })]);
    for (let i = 0; i < ITERATIONS; i++) {
      const tick = String(10_000 + i);
      await c.addTick(Number(tick), i % 2 === 0 ? ['d', 'a', 'b'] : ['a', 'b', 'd']);
      await waitFor(() => dStarts.has(tick), { timeoutMs: 20_000, what: `d of tick ${tick} to start (a lost promotion hangs here)` });
    }
    expect(doubleStarts).toBe(0);
    expect(dStarts.size).toBe(ITERATIONS);
    for (const [tick, start] of dStarts) {
      expect(start).toBeGreaterThanOrEqual(Math.max(finished.get(`a@${tick}`)!, finished.get(`b@${tick}`)!));
    }
    // Every d completed once, after its start; read once all have, so no later start could be missed.
    await waitFor(async () => (await c.queues.agents.getCompleted(0, -1)).filter((j) => j.name === 'd').length === ITERATIONS, { what: `${ITERATIONS} completed runs of d` });
    const completed = await c.queues.agents.getCompleted(0, -1);
    const completedD = completed.filter((j) => j.name === 'd');
    expect(completedD.every((j) => (j.returnvalue as { outcome: string }).outcome === 'success')).toBe(true);
    expect(doubleStarts).toBe(0);
    // The two dependencies of every tick finished on different workers.
    const workerOf = new Map(completed.map((j) => [j.id!, (j.returnvalue as { workerId: string }).workerId]));
    const sameWorker = [...dStarts.keys()].filter((tick) => workerOf.get(`repeat:a:${tick}`) === workerOf.get(`repeat:b:${tick}`));
    expect(sameWorker).toEqual([]);
  }, 120_000);

  it('skips the dependent with the reason when its dependency run of the same tick ends in the DLQ', async () => {
    let dependentRan = false;
    const c = await dependencyCluster(redis, [
      {
        name: 'crm-sync',
        retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 100 } },
        run: async () => {
          throw new Error('CRM answered 503');
        },
      },
      {
        name: 'lead-scorer',
        dependsOn: ['crm-sync'],
        run: async () => {
          dependentRan = true;
        },
      },
    ]);
    await c.startWorker({ concurrency: 2 });
    await c.addTick(2_000, ['lead-scorer', 'crm-sync']);
    const dependent = await c.completedRun('repeat:lead-scorer:2000', 'the dependent to finish');
    expect(dependentRan).toBe(false);
    expect(dependent.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['dependency crm-sync run dead-lettered: CRM answered 503'] });
    expect(c.events.filter((e) => e.agent === 'lead-scorer' && ['agent:failed', 'agent:retrying', 'agent:dlq'].includes(e.type))).toEqual([]);
    expect(await new DeadLetterQueue(c.queues.agents).size()).toBe(1);
    const state = await c.state.get('lead-scorer');
    expect(state).toMatchObject({ skipped: 1, failures: 0, runs: 0 });
    await waitFor(() => c.events.some((e) => e.type === 'dependency:unhealthy' && e.agent === 'lead-scorer'), { what: 'dependency:unhealthy' });
    const unhealthy = c.events.find((e) => e.type === 'dependency:unhealthy')!;
    expect(c.events.filter((e) => e.type === 'agent:skipped' && e.agent === 'lead-scorer')).toHaveLength(1);
    expect(unhealthy.data.reasons).toEqual(['dependency crm-sync run dead-lettered: CRM answered 503']);
  });
});

describe('priority', () => {
  it("keeps a promoted dependent's priority: it starts before a backlog of priority 2 and 3 runs, which keep FIFO order", async () => {
    const order: string[] = [];
    const record = (name: string) => async (ctx: { data: unknown }) => void order.push(`${name}#${(ctx.data as { n?: number } | undefined)?.n ?? ''}`);
    let releaseRoot!: () => void;
    const rootGate = new Promise<void>((r) => (releaseRoot = r));
    let isRootRunning = false;
    const c = await dependencyCluster(redis, [
      {
        name: 'root',
        priority: 3,
        run: async () => {
          isRootRunning = true;
          order.push('root#');
          await rootGate;
        },
      },
      { name: 'urgent', priority: 1, dependsOn: ['root'], run: record('urgent') },
      { name: 'important', priority: 2, run: record('important') },
      { name: 'normal', priority: 3, run: record('normal') },
    ]);
    await c.startWorker({ concurrency: 1 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention, redis: c.redis, keys: c.keys, parkedRecheckMs: 10 * 60_000 };
    await triggerRun(deps, 'root', { withDependents: true, data: { n: 0 } });
    await waitFor(() => isRootRunning, { what: 'root to start' });
    // The backlog arrives while the dependent is parked: it must still go first when promoted.
    for (let n = 0; n < 3; n++) await triggerRun(deps, 'normal', { data: { n } });
    for (let n = 0; n < 2; n++) await triggerRun(deps, 'important', { data: { n } });
    releaseRoot();
    await waitFor(() => order.length === 7, { what: 'all seven runs' });
    expect(order).toEqual(['root#', 'urgent#0', 'important#0', 'important#1', 'normal#0', 'normal#1', 'normal#2']);
  });
});
