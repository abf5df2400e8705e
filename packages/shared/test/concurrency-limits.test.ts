import { describe, expect, it } from 'vitest';
import { cancelRun, triggerRun, type AgentContext } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { controlsCluster, retention, sleep } from './_controls-cluster.js';

const redis = useTestRedis();

/** Counts the runs of each key running at once, and the most ever seen. */
function concurrencyProbe() {
  const active = new Map<string, number>();
  const highest = new Map<string, number>();
  let total = 0;
  let highestTotal = 0;
  return {
    highest,
    get highestTotal() {
      return highestTotal;
    },
    async during(key: string, work: () => Promise<void>) {
      active.set(key, (active.get(key) ?? 0) + 1);
      total += 1;
      highest.set(key, Math.max(highest.get(key) ?? 0, active.get(key)!));
      highestTotal = Math.max(highestTotal, total);
      try {
        await work();
      } finally {
        active.set(key, active.get(key)! - 1);
        total -= 1;
      }
    },
  };
}

type Tenant = { tenant: string; n: number };

describe('concurrency limits across workers', () => {
  it('runs at most N runs of an agent at once, queued runs waiting without a worker slot', async () => {
    const probe = concurrencyProbe();
    const finished: number[] = [];
    const c = await controlsCluster(redis, [
      {
        name: 'export',
        concurrency: { limit: 3 },
        overlap: 'queue',
        run: async (ctx: AgentContext) => {
          await probe.during('all', () => sleep(60));
          finished.push((ctx.data as Tenant).n);
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 4 }), c.startWorker({ id: 'w2', concurrency: 4 }), c.startWorker({ id: 'w3', concurrency: 4 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    for (let n = 0; n < 24; n++) await triggerRun(deps, 'export', { data: { tenant: 'a', n } });
    await waitFor(async () => (await c.state.get('export')).runs === 24, { timeoutMs: 20_000, what: 'all 24 runs recorded' });
    expect(probe.highest.get('all')).toBe(3);
    expect(await c.state.get('export')).toMatchObject({ runs: 24, successes: 24, skipped: 0 });
    expect(finished.sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i));
    // Every slot was given back: the sorted set of holders is gone with its last holder.
    expect(await c.redis.exists(c.keys.key('agent', 'export', 'slots'))).toBe(0);
    expect(await c.redis.llen(c.keys.key('agent', 'export', 'slot-waiters'))).toBe(0);
  });

  it('limits per key value: at most N per tenant, tenants side by side', async () => {
    const probe = concurrencyProbe();
    const c = await controlsCluster(redis, [
      {
        name: 'tenant-sync',
        concurrency: { limit: 2, key: (data) => (data as Tenant).tenant },
        overlap: 'queue',
        run: async (ctx: AgentContext) => probe.during((ctx.data as Tenant).tenant, () => sleep(40)),
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 5 }), c.startWorker({ id: 'w2', concurrency: 5 }), c.startWorker({ id: 'w3', concurrency: 5 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const tenants = ['t1', 't2', 't3', 't4', 't5'];
    for (let n = 0; n < 40; n++) await triggerRun(deps, 'tenant-sync', { data: { tenant: tenants[n % 5], n } });
    await waitFor(async () => (await c.state.get('tenant-sync')).runs === 40, { timeoutMs: 20_000, what: 'all 40 runs recorded' });
    expect(Math.max(...probe.highest.values())).toBe(2);
    // Different tenants ran side by side: more than one tenant's limit at once.
    expect(probe.highestTotal).toBeGreaterThan(2);
    expect(await c.state.get('tenant-sync')).toMatchObject({ successes: 40, skipped: 0 });
    expect(await c.redis.zcard(c.keys.key('agent', 'tenant-sync', 'running'))).toBe(0);
    expect(await c.redis.zcard(c.keys.key('agent', 'tenant-sync', 'waiting'))).toBe(0);
  });

  it("skips a run over the limit with the limit and key in its reason under 'skip'", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    const c = await controlsCluster(redis, [
      {
        name: 'report',
        concurrency: { limit: 2, key: (data) => (data as Tenant).tenant },
        run: async () => {
          started += 1;
          await gate;
        },
      },
    ]);
    await c.startWorker({ concurrency: 5 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    await triggerRun(deps, 'report', { data: { tenant: 'acme', n: 1 } });
    await triggerRun(deps, 'report', { data: { tenant: 'acme', n: 2 } });
    await waitFor(() => started === 2, { what: 'two runs of acme to start' });
    const third = await triggerRun(deps, 'report', { data: { tenant: 'acme', n: 3 } });
    const skipped = await c.completedRun(third.runId);
    expect(skipped.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['overlap: 2 running for key "acme"'] });
    // Another tenant is not held back by acme's runs.
    const other = await triggerRun(deps, 'report', { data: { tenant: 'globex', n: 4 } });
    await waitFor(() => started === 3, { what: "globex's run to start beside acme's two" });
    release();
    expect((await c.completedRun(other.runId)).returnvalue).toMatchObject({ outcome: 'success' });
  });

  it('fails a run whose key function throws, without retrying it, and refuses such a manual trigger', async () => {
    const c = await controlsCluster(redis, [
      {
        name: 'keyed',
        concurrency: { limit: 1, key: (data) => (data as { tenant: string }).tenant.toUpperCase() },
        retry: { attempts: 3 },
      },
    ]);
    await c.startWorker();
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    await expect(triggerRun(deps, 'keyed', { data: {} })).rejects.toThrow(/concurrency.key of agent keyed threw/);
    // A run queued without that check (as a script or an older scheduler would) fails once, to the DLQ.
    const job = await c.queues.agents.add('keyed', { agent: 'keyed', trigger: 'manual', data: {} }, { attempts: 3 });
    await waitFor(async () => (await c.queues.agents.getJobState(job.id!)) === 'failed', { what: 'the run to fail' });
    const failed = await c.queues.agents.getJob(job.id!);
    expect(failed!.attemptsMade).toBe(1);
    expect(failed!.failedReason).toMatch(/^concurrency.key of agent keyed threw: /);
    expect(await c.state.get('keyed')).toMatchObject({ runs: 1, failures: 1 });
  });
});

describe('overlap policies', () => {
  it('bufferOne keeps one run waiting and skips the runs that come while it waits', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const ran: number[] = [];
    const c = await controlsCluster(redis, [
      {
        name: 'refresh',
        overlap: 'bufferOne',
        run: async (ctx: AgentContext) => {
          ran.push((ctx.data as Tenant).n);
          if ((ctx.data as Tenant).n === 1) await gate;
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 2 }), c.startWorker({ id: 'w2', concurrency: 2 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    await triggerRun(deps, 'refresh', { data: { n: 1 } });
    await waitFor(() => ran.length === 1, { what: 'the first run to start' });
    const buffered = await triggerRun(deps, 'refresh', { data: { n: 2 } });
    await waitFor(async () => (await c.queues.agents.getJobState(buffered.runId)) === 'delayed', { what: 'the second run to wait' });
    const third = await triggerRun(deps, 'refresh', { data: { n: 3 } });
    const fourth = await triggerRun(deps, 'refresh', { data: { n: 4 } });
    for (const run of [third, fourth]) {
      expect((await c.completedRun(run.runId)).returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['overlap; a run already waits for its turn'] });
    }
    release();
    expect((await c.completedRun(buffered.runId)).returnvalue).toMatchObject({ outcome: 'success' });
    expect(ran).toEqual([1, 2]);
  });

  it('cancelOther cancels the running run and starts the new one once it has ended', async () => {
    const ran: number[] = [];
    const c = await controlsCluster(redis, [
      {
        name: 'render',
        overlap: 'cancelOther',
        run: async (ctx: AgentContext) => {
          ran.push((ctx.data as Tenant).n);
          if ((ctx.data as Tenant).n === 1) {
            await new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)));
          }
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1' }), c.startWorker({ id: 'w2' })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const first = await triggerRun(deps, 'render', { data: { n: 1 } });
    await waitFor(() => ran.length === 1, { what: 'the first run to start' });
    const second = await triggerRun(deps, 'render', { data: { n: 2 } });
    const cancelled = await c.completedRun(first.runId, 'the first run to be cancelled');
    expect(cancelled.returnvalue).toMatchObject({ outcome: 'cancelled', reason: `overlap: replaced by run ${second.runId}` });
    expect((await c.completedRun(second.runId)).returnvalue).toMatchObject({ outcome: 'success' });
    expect(ran).toEqual([1, 2]);
    expect(await c.state.get('render')).toMatchObject({ successes: 1, cancelled: 1, failures: 0 });
  });

  it('allowAll runs every run at once, holding no lease', async () => {
    const probe = concurrencyProbe();
    const c = await controlsCluster(redis, [{ name: 'fan-out', overlap: 'allowAll', run: async () => probe.during('all', () => sleep(150)) }]);
    await c.startWorker({ concurrency: 5 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    for (let n = 0; n < 5; n++) await triggerRun(deps, 'fan-out', { data: { n } });
    await waitFor(async () => (await c.state.get('fan-out')).runs === 5, { what: 'five runs' });
    expect(probe.highest.get('all')).toBe(5);
    expect(await c.redis.exists(c.keys.key('agent', 'fan-out', 'lease'))).toBe(0);
  });

  it('a cancelled waiter gives up its place: the next one gets the keyed slot', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const ran: number[] = [];
    const c = await controlsCluster(redis, [
      {
        name: 'invoice',
        concurrency: { limit: 1, key: (data) => (data as Tenant).tenant },
        overlap: 'queue',
        run: async (ctx: AgentContext) => {
          ran.push((ctx.data as Tenant).n);
          if ((ctx.data as Tenant).n === 1) await gate;
        },
      },
    ]);
    await c.startWorker({ concurrency: 3 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    await triggerRun(deps, 'invoice', { data: { tenant: 'acme', n: 1 } });
    await waitFor(() => ran.length === 1, { what: 'the first run to start' });
    const second = await triggerRun(deps, 'invoice', { data: { tenant: 'acme', n: 2 } });
    const third = await triggerRun(deps, 'invoice', { data: { tenant: 'acme', n: 3 } });
    await waitFor(async () => (await c.redis.llen(c.keys.key('agent', 'invoice', 'lease-waiters', 'acme'))) === 2, { what: 'two waiters for acme' });
    const answer = await cancelRun({ queue: c.queues.agents, redis: c.redis, keys: c.keys, bus: { historySize: 1000 } as never, registry: c.registry }, second.runId);
    expect(answer).toMatchObject({ outcome: 'cancelled', state: 'parked' });
    expect(await c.redis.llen(c.keys.key('agent', 'invoice', 'lease-waiters', 'acme'))).toBe(1);
    expect(await c.redis.zcard(c.keys.key('agent', 'invoice', 'waiting'))).toBe(1);
    release();
    expect((await c.completedRun(third.runId)).returnvalue).toMatchObject({ outcome: 'success' });
    expect(ran).toEqual([1, 3]);
  });
});
