import { describe, expect, it } from 'vitest';
import { triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, retention, sleep } from './_dependency-cluster.js';

const redis = useTestRedis();

describe('overlap across workers', () => {
  it("skips a run with reason overlap while another worker runs the same 'skip' agent", async () => {
    let active = 0;
    let maxActive = 0;
    let ran = 0;
    const c = await dependencyCluster(redis, [
      {
        name: 'invoice-export',
        overlap: 'skip',
        run: async () => {
          active += 1;
          maxActive = Math.max(maxActive, active);
          ran += 1;
          await sleep(600);
          active -= 1;
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1' }), c.startWorker({ id: 'w2' })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const first = await triggerRun(deps, 'invoice-export');
    await waitFor(() => active === 1, { what: 'the first run to start' });
    const second = await triggerRun(deps, 'invoice-export');
    const skipped = await c.completedRun(second.runId, 'the second run to be skipped');
    expect(skipped.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['overlap'] });
    await waitFor(async () => (await c.queues.agents.getJob(first.runId))?.isCompleted(), { what: 'the first run to complete' });
    expect(ran).toBe(1);
    expect(maxActive).toBe(1);
    expect(await c.state.get('invoice-export')).toMatchObject({ runs: 1, successes: 1, skipped: 1, failures: 0 });

    // The lease is released: the next run goes ahead.
    const third = await triggerRun(deps, 'invoice-export');
    await waitFor(async () => (await c.queues.agents.getJob(third.runId))?.isCompleted(), { what: 'a later run to complete' });
    expect(ran).toBe(2);
  });

  it("runs queued runs of a 'queue' agent one at a time, in order, without holding worker slots", async () => {
    let active = 0;
    let maxActive = 0;
    const order: number[] = [];
    let otherRan = false;
    const c = await dependencyCluster(redis, [
      {
        name: 'ledger-close',
        overlap: 'queue',
        run: async (ctx) => {
          active += 1;
          maxActive = Math.max(maxActive, active);
          order.push((ctx.data as { n: number }).n);
          await sleep(200);
          active -= 1;
        },
      },
      { name: 'other', run: async () => void (otherRan = true) },
    ]);
    // Two workers, one slot each: a waiting run must not sit on the second slot.
    await Promise.all([c.startWorker({ id: 'w1' }), c.startWorker({ id: 'w2' })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    await triggerRun(deps, 'ledger-close', { data: { n: 0 } });
    await waitFor(() => active === 1, { what: 'the first run to start' });
    for (let n = 1; n <= 3; n++) await triggerRun(deps, 'ledger-close', { data: { n } });
    await triggerRun(deps, 'other');
    await waitFor(() => otherRan, { timeoutMs: 5_000, what: 'another agent to get a slot while runs queue' });
    expect(order.length).toBeLessThan(4);
    await waitFor(() => order.length === 4 && active === 0, { timeoutMs: 15_000, what: 'all four queued runs' });
    expect(maxActive).toBe(1);
    expect(order).toEqual([0, 1, 2, 3]);
    // The last run's record follows its return.
    await waitFor(async () => (await c.state.get('ledger-close')).runs === 4, { what: 'the fourth run recorded' });
    expect(await c.state.get('ledger-close')).toMatchObject({ runs: 4, successes: 4, skipped: 0 });
  });
});
