import { describe, expect, it } from 'vitest';
import { disableAgent, enableAgent, leaseWaitersKey, promoteParkedRun, triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, retention } from './_dependency-cluster.js';

const redis = useTestRedis();

describe('overlap across workers', () => {
  it("skips a run with reason overlap while another worker runs the same 'skip' agent", async () => {
    let active = 0;
    let maxActive = 0;
    let ran = 0;
    // The first run holds until the test lets it go, so the second is sure to meet it running.
    let releaseFirst!: () => void;
    const firstHeld = new Promise<void>((r) => (releaseFirst = r));
    const c = await dependencyCluster(redis, [
      {
        name: 'invoice-export',
        overlap: 'skip',
        run: async () => {
          active += 1;
          maxActive = Math.max(maxActive, active);
          ran += 1;
          if (ran === 1) await firstHeld;
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
    releaseFirst();
    await c.completedRun(first.runId, 'the first run to complete');
    expect(ran).toBe(1);
    expect(maxActive).toBe(1);
    expect(await c.state.get('invoice-export')).toMatchObject({ runs: 1, successes: 1, skipped: 1, failures: 0 });

    // The lease is released: the next run goes ahead.
    const third = await triggerRun(deps, 'invoice-export');
    expect((await c.completedRun(third.runId, 'a later run to complete')).returnvalue).toMatchObject({ outcome: 'success' });
    expect(ran).toBe(2);
  });

  it("runs queued runs of a 'queue' agent one at a time, in order, without holding worker slots", async () => {
    let active = 0;
    let maxActive = 0;
    const order: number[] = [];
    let otherRan = false;
    // Each run holds until the test releases it, so what runs while it is held is known, not raced.
    const held = new Map<number, () => void>();
    const c = await dependencyCluster(redis, [
      {
        name: 'ledger-close',
        overlap: 'queue',
        run: async (ctx) => {
          const n = (ctx.data as { n: number }).n;
          active += 1;
          maxActive = Math.max(maxActive, active);
          order.push(n);
          await new Promise<void>((release) => held.set(n, release));
          active -= 1;
        },
      },
      {
        name: 'other',
        run: async () => {
          otherRan = true;
        },
      },
    ]);
    // Two workers, one slot each: a waiting run must not sit on the second slot.
    await Promise.all([c.startWorker({ id: 'w1' }), c.startWorker({ id: 'w2' })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const runIds = [(await triggerRun(deps, 'ledger-close', { data: { n: 0 } })).runId];
    await waitFor(() => active === 1, { what: 'the first run to start' });
    for (let n = 1; n <= 3; n++) runIds.push((await triggerRun(deps, 'ledger-close', { data: { n } })).runId);
    await triggerRun(deps, 'other');
    // Run 0 still holds one worker's slot: 'other' can only run if the queued runs hold none.
    await waitFor(() => otherRan, { timeoutMs: 15_000, what: 'another agent to get a slot while runs queue' });
    expect(order).toEqual([0]);
    for (let n = 0; n < 4; n++) {
      const release = await waitFor(() => held.get(n), { timeoutMs: 15_000, what: `queued run ${n} to start` });
      release();
    }
    for (const runId of runIds) await c.completedRun(runId);
    expect(maxActive).toBe(1);
    expect(order).toEqual([0, 1, 2, 3]);
    // The last run's record follows its return.
    await waitFor(async () => (await c.state.get('ledger-close')).runs === 4, { what: 'the fourth run recorded' });
    expect(await c.state.get('ledger-close')).toMatchObject({ runs: 4, successes: 4, skipped: 0 });
  });
  // Found by the joint soak (apps/scheduler/test/soak-e2e.test.ts): a parked 'queue' run that woke
  // and was skipped (its agent disabled, a dependency dead-lettered) stayed in the waiters list; the
  // lease was later handed to it, it never took it, and every run behind it waited for the lease to
  // expire (timeout + lock + 30 s).
  it("hands the turn past a waiting 'queue' run that was skipped: the next waiter starts when the running one ends", async () => {
    const held = new Map<number, () => void>();
    const c = await dependencyCluster(redis, [
      {
        name: 'ledger-close',
        overlap: 'queue',
        run: async (ctx) => {
          const n = (ctx.data as { n: number }).n;
          await new Promise<void>((release) => held.set(n, release));
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1' }), c.startWorker({ id: 'w2' })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention };
    const toggle = { redis: c.redis, keys: c.keys };
    const waiters = leaseWaitersKey(c.keys, 'ledger-close');
    const first = await triggerRun(deps, 'ledger-close', { data: { n: 0 } });
    await waitFor(() => held.get(0), { what: 'the first run to start' });
    const skipped = await triggerRun(deps, 'ledger-close', { data: { n: 1 } });
    await waitFor(async () => (await c.redis.lrange(waiters, 0, -1)).includes(skipped.runId), { what: 'the second run to wait for its turn' });

    // It wakes (as by its safety deadline) while its agent is disabled: skipped.
    await disableAgent(toggle, 'ledger-close');
    expect(await promoteParkedRun(c.redis, c.keys, skipped.runId, c.registry.require('ledger-close').priority)).toBe(true);
    expect((await c.completedRun(skipped.runId, 'the woken waiter to be skipped')).returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['disabled'] });
    expect(await c.redis.lrange(waiters, 0, -1), 'a skipped run gives up its place').toEqual([]);

    await enableAgent(toggle, 'ledger-close');
    const next = await triggerRun(deps, 'ledger-close', { data: { n: 2 } });
    await waitFor(async () => (await c.redis.lrange(waiters, 0, -1)).includes(next.runId), { what: 'the third run to wait for its turn' });
    held.get(0)!();
    await c.completedRun(first.runId, 'the first run to complete');
    const release = await waitFor(() => held.get(2), { timeoutMs: 5000, what: 'the waiting run to start once the first one ended' });
    release();
    expect((await c.completedRun(next.runId)).returnvalue).toMatchObject({ outcome: 'success' });
  });
});
