import { afterAll, describe, expect, it } from 'vitest';
import { AgentStateStore, createKeys, createQueues, listLiveWorkers, loadRegistry, runJobOptions } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();

const RUNS = 200;
// Ten agents, so both workers have several runs in flight (one agent never runs twice at once).
const AGENTS = Array.from({ length: 10 }, (_, i) => `short-${i}`);
const agentsDir = writeAgentsDir(
  Object.fromEntries(
    AGENTS.map((name) => [
      `${name}.ts`,
      agentSource({ name, retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 100 } } }, 'await new Promise((r) => setTimeout(r, 40)); return { ok: true };'),
    ]),
  ),
);

// Blocks its worker's event loop for 12 s on its first start (marker file absent), returns at once
// afterwards: well past the 3 s lock plus a 1.5 s stalled check, however loaded the machine.
const blockingDir = writeAgentsDir({
  'blocker.ts': agentSource(
    { name: 'blocker', retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 100 } } },
    `const fs = await import('node:fs');
     if (!fs.existsSync(ctx.data.marker)) { fs.writeFileSync(ctx.data.marker, 'blocked'); const until = Date.now() + 12000; while (Date.now() < until) {} }
     return { ok: true };`,
  ),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

describe('a worker killed with SIGKILL', () => {
  it(`loses none of ${RUNS} runs: its active runs are recovered by the other worker and counted`, async () => {
    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const client = redis.client();
    const queues = createQueues({ connection: client, keys });
    toClose.push(() => queues.close());
    const env = {
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: prefix,
      WERKPILOT_AGENTS: agentsDir,
      WORKER_CONCURRENCY: '5',
      // A short lock and stalled check so recovery happens within seconds (defaults: 30 s each),
      // yet long enough that the survivor, renewing every 2.5 s, keeps its own locks on a loaded machine.
      LOCK_DURATION_MS: '5000',
      STALLED_INTERVAL_MS: '2500',
      HEARTBEAT_INTERVAL_MS: '1000',
    };
    const victim = startApp('worker', env);
    const survivor = startApp('worker', env);
    await Promise.all([victim.waitForLog(/worker online/), survivor.waitForLog(/worker online/)]);
    const victimId = victim.logs().find((l) => l.msg === 'worker online')!.workerId as string;

    const registry = await loadRegistry(agentsDir);
    const jobs = await queues.agents.addBulk(
      Array.from({ length: RUNS }, (_, i) => {
        const name = AGENTS[i % AGENTS.length]!;
        return { name, data: { agent: name, trigger: 'manual' as const, data: { i } }, opts: runJobOptions(registry.require(name), { dlqRetain: 100, completedRetain: 1000 }) };
      }),
    );

    // Kill the victim while it holds runs.
    await waitFor(
      async () => {
        const active = await queues.agents.getActive();
        return (await queues.agents.getCompletedCount()) >= 20 && active.some((j) => j.processedBy === victimId);
      },
      { timeoutMs: 30_000, what: 'the victim mid-run' },
    );
    victim.kill('SIGKILL');
    expect(await victim.exited).toBe('SIGKILL');
    // What it held when it died is still active under its name until its locks expire (5 s).
    const heldByVictim = (await queues.agents.getActive()).filter((j) => j.processedBy === victimId).map((j) => j.id!);

    await waitFor(async () => (await queues.agents.getCompletedCount()) + (await queues.agents.getFailedCount()) >= RUNS, {
      timeoutMs: 45_000,
      what: `${RUNS} finished runs`,
    });
    const completed = await queues.agents.getCompleted(0, -1);
    const lost = RUNS - completed.length;
    console.log(`[measure] kill -9 during ${RUNS} runs: ${lost} lost, ${heldByVictim.length} runs held by the killed worker were recovered`);
    expect(lost).toBe(0);
    expect(await queues.agents.getFailedCount()).toBe(0);
    expect(new Set(completed.map((j) => j.id))).toEqual(new Set(jobs.map((j) => j.id)));
    // A recovered run counts one attempt: the one that completed it.
    for (const id of heldByVictim) {
      const job = completed.find((j) => j.id === id)!;
      expect(job.attemptsMade).toBe(1);
      expect((job.returnvalue as { workerId: string }).workerId).not.toBe(victimId);
    }
    // Every run is in the counters: it ran (success) or was skipped (overlap with a run of the same agent).
    const states = [...(await new AgentStateStore({ redis: client, keys }).getMany(AGENTS)).values()];
    const counted = states.reduce((sum, s) => sum + s.successes + s.skipped, 0);
    console.log(`[measure] counters: ${states.reduce((n, s) => n + s.successes, 0)} successes + ${states.reduce((n, s) => n + s.skipped, 0)} skipped = ${counted} of ${RUNS}`);
    // Exactly: a run the killed worker had counted before it died, then counted again by the one that took it over, would show here.
    expect(counted).toBe(RUNS);
    expect(states.reduce((sum, s) => sum + s.failures, 0)).toBe(0);

    // The dead worker leaves the live list once its heartbeat TTL (3 × 1 s) passes.
    await waitFor(async () => (await listLiveWorkers({ redis: client, keys })).every((w) => w.id !== victimId), { timeoutMs: 15_000, what: 'the killed worker gone from the live list' });
    expect((await listLiveWorkers({ redis: client, keys })).length).toBe(1);

    survivor.kill('SIGTERM');
    expect(await survivor.exited).toBe(0);
  }, 90_000);
});

describe('an agent that blocks the event loop longer than the lock', () => {
  it('has its run taken over by another worker, and the blocked worker says so loudly', async () => {
    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const queues = createQueues({ connection: redis.client(), keys });
    toClose.push(() => queues.close());
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: blockingDir, LOCK_DURATION_MS: '3000', STALLED_INTERVAL_MS: '1500' };
    const apps = [startApp('worker', env), startApp('worker', env)];
    await Promise.all(apps.map((app) => app.waitForLog(/worker online/)));
    const registry = await loadRegistry(blockingDir);
    const job = await queues.agents.add(
      'blocker',
      { agent: 'blocker', trigger: 'manual', data: { marker: `${blockingDir}/marker-${prefix}` } },
      runJobOptions(registry.require('blocker'), { dlqRetain: 100, completedRetain: 1000 }),
    );
    const blockedId = await waitFor(
      async () => {
        const active = await queues.agents.getJob(job.id!);
        return (await active?.getState()) === 'active' ? active!.processedBy : undefined;
      },
      { what: 'the blocking run active' },
    );
    const blocked = apps.find((app) => app.logs().some((l) => l.workerId === blockedId))!;

    await waitFor(async () => (await queues.agents.getJobState(job.id!)) === 'completed', { timeoutMs: 30_000, what: 'the run completed' });
    expect(((await queues.agents.getJob(job.id!))!.returnvalue as { workerId: string }).workerId).not.toBe(blockedId);
    // The blocked worker notices it lost the lock and says so, instead of finishing the run silently.
    await blocked.waitForLog(/lost the lock of run \d+/, 20_000);
    for (const app of apps) {
      app.kill('SIGTERM');
      expect(await app.exited).toBe(0);
    }
  }, 90_000);
});
