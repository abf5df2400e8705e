import { describe, expect, it } from 'vitest';
import { reconcileJobSchedulers, type AgentContext, type CatchUpPolicy } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { controlsCluster, log, retention, sleep } from './_controls-cluster.js';

const redis = useTestRedis();

/** Waits until `fraction` (ms into the current second) is in [from, to), so tick arithmetic below is exact. */
async function atFraction(from: number, to: number): Promise<number> {
  for (;;) {
    const now = Date.now();
    const fraction = now % 1000;
    if (fraction >= from && fraction < to) return now;
    await sleep((from - fraction + 1000) % 1000);
  }
}

/**
 * An every-second agent whose run of tick T1 arrives 5 s late, as BullMQ's job scheduler makes it
 * after a downtime: the ticks T1 + 1 s … T1 + 5 s were missed. Returns the ticks its runs saw.
 */
async function lateTick(catchUp: CatchUpPolicy) {
  const seen: number[] = [];
  const c = await controlsCluster(redis, [{ name: 'digest', schedule: { cron: '* * * * * *' }, catchUp, run: async (ctx: AgentContext) => void seen.push(ctx.scheduledAt!.getTime()) }]);
  const now = await atFraction(0, 200);
  const t1 = now - (now % 1000) - 5000;
  await c.queues.agents.add('digest', { agent: 'digest', trigger: 'cron' }, { jobId: `repeat:digest:${t1}` });
  await c.startWorker({ concurrency: 3 });
  return { c, seen, t1 };
}

describe('catch-up of ticks missed while no worker ran', () => {
  it("'latest' runs one run for the missed ticks", async () => {
    const { c, seen, t1 } = await lateTick('latest');
    await waitFor(async () => (await c.state.get('digest')).runs === 1, { what: 'the late tick to run' });
    await sleep(300);
    expect(seen).toEqual([t1]);
    expect(await c.queues.agents.getJobCounts('waiting', 'delayed', 'prioritized')).toEqual({ waiting: 0, delayed: 0, prioritized: 0 });
  });

  it("'none' skips the late tick too", async () => {
    const { c, seen, t1 } = await lateTick('none');
    const skipped = await c.completedRun(`repeat:digest:${t1}`);
    expect(skipped.returnvalue).toMatchObject({ outcome: 'skipped', reasons: [`missed tick ${new Date(t1).toISOString()} (catchUp: none)`] });
    await sleep(300);
    expect(seen).toEqual([]);
    expect(await c.state.get('digest')).toMatchObject({ runs: 0, skipped: 1 });
  });

  it('{ windowMs } runs every missed tick in the window, in tick order, one after another', async () => {
    const { c, seen, t1 } = await lateTick({ windowMs: 60_000 });
    await waitFor(() => seen.length === 6, { timeoutMs: 10_000, what: 'the late tick and the five missed ones' });
    expect(seen).toEqual([0, 1, 2, 3, 4, 5].map((k) => t1 + k * 1000));
    expect(c.eventsOf('agent:started', 'digest').map((e) => e.data.trigger)).toEqual(['cron', 'catch-up', 'catch-up', 'catch-up', 'catch-up', 'catch-up']);
  });

  it('{ windowMs } leaves out the ticks older than the window, the late tick included', async () => {
    // Now is 5.0–5.2 s after T1: a 2.5 s window holds T1 + 3 s, + 4 s and + 5 s.
    const { c, seen, t1 } = await lateTick({ windowMs: 2500 });
    await waitFor(() => seen.length === 3, { timeoutMs: 10_000, what: 'the three missed ticks in the window' });
    expect(seen).toEqual([3, 4, 5].map((k) => t1 + k * 1000));
    const late = await c.completedRun(`repeat:digest:${t1}`);
    expect(late.returnvalue).toMatchObject({ outcome: 'skipped', reasons: [`missed tick ${new Date(t1).toISOString()} is older than the catch-up window (2500 ms)`] });
  });

  it("catches up after BullMQ's job scheduler went 5 ticks without a worker, with no tick left out", async () => {
    const seen: number[] = [];
    const c = await controlsCluster(redis, [
      { name: 'beat', schedule: { cron: '* * * * * *' }, catchUp: { windowMs: 60_000 }, run: async (ctx: AgentContext) => void seen.push(ctx.scheduledAt!.getTime()) },
    ]);
    await reconcileJobSchedulers({ queue: c.queues.agents, registry: c.registry, retention, log });
    const first = await c.startWorker({ id: 'w1' });
    await waitFor(() => seen.length >= 1, { timeoutMs: 5000, what: 'a first tick' });
    await first.worker.close();
    const stoppedAfter = Math.max(...seen);
    await sleep(5500);
    await c.startWorker({ id: 'w2' });
    const restartedAt = Date.now();
    await waitFor(() => seen.some((t) => t > restartedAt), { timeoutMs: 10_000, what: 'the schedule to tick on after the catch-up' });
    const after = [...new Set(seen.filter((t) => t > stoppedAfter))].sort((a, b) => a - b);
    // Every second from the stop to now has its run, each once: the missed ticks were caught up.
    expect(after.length).toBeGreaterThanOrEqual(6);
    expect(after).toEqual(after.map((_, i) => after[0]! + i * 1000));
    expect(seen.filter((t) => t > stoppedAfter)).toHaveLength(after.length);
    expect(after[0]).toBe(stoppedAfter + 1000);
  });
});
