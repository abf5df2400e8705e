import { describe, expect, it } from 'vitest';
import { agentRateKey, cancelRun, limiterKey, rateWaitingKey, triggerRun, type AgentContext } from '@werkpilot/shared';
import type { Redis } from 'ioredis';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { controlsCluster, retention } from './_controls-cluster.js';

const redis = useTestRedis();

/**
 * The most events in any window of `windowMs` (a sliding window over sorted times). Starts are
 * seen a few ms after their admission booked them, and not all equally late, so callers check a
 * window a little shorter than the limit's: every such window of starts lies inside one full
 * window of bookings.
 */
function mostInAnyWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; j < sorted.length; j++) {
    while (sorted[j]! - sorted[i]! >= windowMs) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

/**
 * What a run records when it starts: the time its tokens were granted (their score in the
 * limiter's log) and the time it started, both on Redis's clock. A start can be seen later than
 * its grant by however long its worker's event loop was busy, so the limit is checked exactly on
 * the grants, and every start is checked not to come before its grant.
 */
interface Start {
  grantedAt: number;
  startedAt: number;
}

async function recordStart(redis: Redis, key: string, ctx: AgentContext, into: Start[]): Promise<void> {
  const [[, granted], [, time]] = (await redis
    .multi()
    .zscore(key, `${ctx.runId}:${ctx.attempt - 1}#1`)
    .time()
    .exec()) as [[null, string | null], [null, [string, string]]];
  const startedAt = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
  into.push({ grantedAt: granted === null ? Number.NaN : Number(granted), startedAt });
}

function expectWithinLimit(starts: Start[], max: number, perMs: number, runs: number): void {
  expect(starts).toHaveLength(runs);
  const granted = starts.map((s) => s.grantedAt);
  expect(granted.every(Number.isFinite)).toBe(true);
  expect(mostInAnyWindow(granted, perMs)).toBe(max);
  for (const s of starts) expect(s.startedAt).toBeGreaterThanOrEqual(s.grantedAt);
  // The runs over the budget waited: the grants span the windows the budget needs.
  expect(Math.max(...granted) - Math.min(...granted)).toBeGreaterThanOrEqual((Math.ceil(runs / max) - 1) * perMs);
}

describe('rate limits across workers', () => {
  it('delays runs over the budget until their tokens are free: none failed, no attempt spent, every one run', async () => {
    const starts: Start[] = [];
    const probe = redis.client();
    const c = await controlsCluster(redis, [
      {
        name: 'crm-push',
        overlap: 'allowAll',
        rateLimit: { max: 3, perMs: 400 },
        run: async (ctx: AgentContext) => recordStart(probe, agentRateKey(c.keys, 'crm-push'), ctx, starts),
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 5 }), c.startWorker({ id: 'w2', concurrency: 5 }), c.startWorker({ id: 'w3', concurrency: 5 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const runs = [];
    for (let n = 0; n < 15; n++) runs.push(await triggerRun(deps, 'crm-push', { data: { n } }));
    await waitFor(async () => (await c.state.get('crm-push')).runs === 15, { timeoutMs: 20_000, what: 'all 15 runs recorded' });
    expectWithinLimit(starts, 3, 400, 15);
    for (const { runId } of runs) {
      const job = await c.queues.agents.getJob(runId);
      expect(job!.returnvalue).toMatchObject({ outcome: 'success' });
      // BullMQ counts the attempt that completed: 1 means no attempt was spent on waiting.
      expect(job!.attemptsMade).toBe(1);
    }
    const limited = c.eventsOf('agent:rate-limited', 'crm-push');
    expect(limited.length).toBeGreaterThanOrEqual(10);
    expect(limited[0]!.data).toMatchObject({ limiter: 'rateLimit', attempt: 1 });
    expect(limited[0]!.data.waitMs).toBeGreaterThan(0);
    // Runs whose tokens were due within a few ms waited in their slot without an event; the counter has them all.
    expect(Number(await c.redis.hget(c.keys.agentStats('crm-push'), 'rateLimited'))).toBeGreaterThanOrEqual(limited.length);
    expect(await c.state.get('crm-push')).toMatchObject({ successes: 15, failures: 0, skipped: 0 });
  });

  it('shares a named limiter between the agents that list it', async () => {
    const starts: Start[] = [];
    const probe = redis.client();
    const run = async (ctx: AgentContext) => recordStart(probe, limiterKey(c.keys, 'openai'), ctx, starts);
    const c = await controlsCluster(
      redis,
      [
        { name: 'summarise', overlap: 'allowAll', limiters: ['openai'], run },
        { name: 'classify', overlap: 'allowAll', limiters: ['openai'], run },
      ],
      [{ name: 'openai', max: 2, perMs: 300 }],
    );
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 4 }), c.startWorker({ id: 'w2', concurrency: 4 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    for (let n = 0; n < 5; n++) {
      await triggerRun(deps, 'summarise', { data: { n } });
      await triggerRun(deps, 'classify', { data: { n } });
    }
    await waitFor(() => starts.length === 10, { timeoutMs: 15_000, what: 'all ten runs to start' });
    expectWithinLimit(starts, 2, 300, 10);
  });

  it('keeps a keyed rate limit per key value', async () => {
    const startsOf = new Map<string, Start[]>([
      ['a', []],
      ['b', []],
    ]);
    const probe = redis.client();
    const c = await controlsCluster(redis, [
      {
        name: 'mailer',
        overlap: 'allowAll',
        rateLimit: { max: 1, perMs: 300, key: (data) => (data as { to: string }).to },
        run: async (ctx: AgentContext) => {
          const to = (ctx.data as { to: string }).to;
          await recordStart(probe, agentRateKey(c.keys, 'mailer', to), ctx, startsOf.get(to)!);
        },
      },
    ]);
    await c.startWorker({ concurrency: 6 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    for (let n = 0; n < 3; n++) for (const to of ['a', 'b']) await triggerRun(deps, 'mailer', { data: { to, n } });
    await waitFor(() => [...startsOf.values()].flat().length === 6, { timeoutMs: 10_000, what: 'six runs' });
    for (const to of ['a', 'b']) expectWithinLimit(startsOf.get(to)!, 1, 300, 3);
    // The two keys did not wait for each other: each key's first run was granted at once, side by side.
    expect(Math.abs(Math.min(...startsOf.get('a')!.map((s) => s.grantedAt)) - Math.min(...startsOf.get('b')!.map((s) => s.grantedAt)))).toBeLessThan(200);
  });

  it('ctx.limit takes tokens inside a run and waits for them, across runs and workers', async () => {
    const calls: number[] = [];
    const probe = redis.client();
    const c = await controlsCluster(
      redis,
      [
        {
          name: 'enrich',
          overlap: 'allowAll',
          limiters: [{ name: 'geo-api', cost: 0 }],
          run: async (ctx: AgentContext) => {
            for (let i = 0; i < 3; i++) {
              await ctx.limit('geo-api');
              const [seconds, micros] = await probe.time();
              calls.push(Number(seconds) * 1000 + Math.floor(Number(micros) / 1000));
            }
          },
        },
      ],
      [{ name: 'geo-api', max: 4, perMs: 300 }],
    );
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 2 }), c.startWorker({ id: 'w2', concurrency: 2 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const [seconds, micros] = await probe.time();
    const before = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    for (let n = 0; n < 4; n++) await triggerRun(deps, 'enrich', { data: { n } });
    await waitFor(async () => (await c.state.get('enrich')).successes === 4, { timeoutMs: 10_000, what: 'four runs' });
    expect(calls).toHaveLength(12);
    // The log holds the grants still in their window; the calls never came before theirs.
    const grants = (await probe.zrange(limiterKey(c.keys, 'geo-api'), 0, -1, 'WITHSCORES')).filter((_, i) => i % 2 === 1).map(Number);
    expect(mostInAnyWindow(grants, 300)).toBeLessThanOrEqual(4);
    // 12 calls at 4 per 300 ms: the last ones were granted two windows after the first, which came after `before`.
    expect(Math.max(...calls)).toBeGreaterThanOrEqual(before + 2 * 300);
    // Cost 0 in `limiters`: starting a run took no token, so no run was delayed at admission.
    expect(c.eventsOf('agent:rate-limited', 'enrich')).toHaveLength(0);
  });

  it('fails a run that calls ctx.limit on a limiter its agent does not list, saying so', async () => {
    const c = await controlsCluster(redis, [{ name: 'sloppy', retry: { attempts: 1 }, run: async (ctx: AgentContext) => ctx.limit('openai') }], [{ name: 'openai', max: 5, perMs: 1000 }]);
    await c.startWorker();
    const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'sloppy');
    await waitFor(async () => (await c.queues.agents.getJobState(runId)) === 'failed', { what: 'the run to fail' });
    expect((await c.queues.agents.getJob(runId))!.failedReason).toBe(`ctx.limit('openai'): agent sloppy does not list limiter "openai" in its limiters`);
  });

  it('a run waiting for its tokens keeps its concurrency slot, and a cancel gives both back', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const c = await controlsCluster(redis, [{ name: 'pricing', concurrency: { limit: 2 }, overlap: 'queue', rateLimit: { max: 1, perMs: 60_000 }, run: () => gate }]);
    await c.startWorker({ concurrency: 3 });
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const first = await triggerRun(deps, 'pricing');
    await waitFor(async () => (await c.queues.agents.getJobState(first.runId)) === 'active', { what: 'the first run to start' });
    const second = await triggerRun(deps, 'pricing');
    await waitFor(async () => (await c.redis.zcard(rateWaitingKey(c.keys, 'pricing'))) === 1, { what: 'the second run to wait for its token' });
    const slots = c.keys.key('agent', 'pricing', 'slots');
    expect((await c.redis.zrange(slots, 0, -1)).sort()).toEqual([first.runId, second.runId].sort());
    expect(c.eventsOf('agent:rate-limited', 'pricing').map((e) => e.data.runId)).toEqual([second.runId]);
    expect(await cancelRun({ queue: c.queues.agents, redis: c.redis, keys: c.keys, bus: { historySize: 1000 } as never, registry: c.registry }, second.runId)).toMatchObject({
      outcome: 'cancelled',
      state: 'parked',
    });
    expect(await c.redis.zrange(slots, 0, -1)).toEqual([first.runId]);
    expect(await c.redis.zcard(rateWaitingKey(c.keys, 'pricing'))).toBe(0);
    release();
    await c.completedRun(first.runId);
  });
});
