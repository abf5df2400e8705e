import { afterAll, describe, expect, it } from 'vitest';
import { createKeys, createQueues, freePort, loadRegistry, runJobOptions, type Queues } from '@werkpilot/shared';
import { agentSource, onSharedRedis, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

// AOF on, so a restart keeps what was queued (as the compose and `pnpm start` Redis do).
const redis = useTestRedis({ persistent: true });

const retention = { dlqRetain: 100, completedRetain: 1000 };
const agentsDir = writeAgentsDir({
  'every-second.ts': agentSource({ name: 'every-second', schedule: { cron: '* * * * * *' }, priority: 2 }, 'return { ok: true };'),
  'on-demand.ts': agentSource({ name: 'on-demand', overlap: 'queue' }, 'await new Promise((r) => setTimeout(r, 20)); return { ok: true };'),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

async function addRuns(queues: Queues, count: number, delayMs = 0): Promise<string[]> {
  const spec = (await loadRegistry(agentsDir)).require('on-demand');
  const jobs = await queues.agents.addBulk(
    Array.from({ length: count }, () => ({
      name: 'on-demand',
      data: { agent: 'on-demand', trigger: 'manual' as const },
      opts: { ...runJobOptions(spec, retention), ...(delayMs > 0 ? { delay: delayMs } : {}) },
    })),
  );
  return jobs.map((j) => j.id!);
}

async function allCompleted(queues: Queues, ids: string[]): Promise<boolean> {
  const states = await Promise.all(ids.map((id) => queues.agents.getJobState(id)));
  return states.every((s) => s === 'completed');
}

/** Time from Redis answering again until a run added then has completed. */
async function timeToResume(queues: Queues): Promise<number> {
  const startedAt = Date.now();
  const [id] = await addRuns(queues, 1);
  await waitFor(() => allCompleted(queues, [id!]), { timeoutMs: 30_000, intervalMs: 20, what: 'a new run after the Redis restart' });
  return Date.now() - startedAt;
}

function cronRunsSince(queues: Queues, since: number): Promise<number> {
  return queues.agents.getCompleted(0, -1).then((jobs) => jobs.filter((j) => j.name === 'every-second' && (j.finishedOn ?? 0) > since).length);
}

describe('a Redis restart while a scheduler and two workers run', () => {
  it.skipIf(onSharedRedis('restarts its Redis'))(
    'is survived by every process: they reconnect, queued runs survive, and new and cron runs continue within seconds',
    async () => {
      const prefix = uniquePrefix();
      const keys = createKeys(prefix);
      const client = redis.client();
      const queues = createQueues({ connection: client, keys });
      toClose.push(() => queues.close());
      const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(await freePort()), HEARTBEAT_INTERVAL_MS: '500' };
      const processes: AppProcess[] = [startApp('scheduler', env), startApp('worker', env), startApp('worker', env)];
      const [scheduler] = processes;
      await scheduler!.waitForLog(/dashboard on/);
      await Promise.all(processes.slice(1).map((p) => p.waitForLog(/worker online/)));
      await waitFor(async () => (await cronRunsSince(queues, 0)) >= 2, { timeoutMs: 20_000, what: 'cron runs before the restart' });
      const liveWorkers = async () =>
        ((await (await fetch(`http://127.0.0.1:${env.PORT}/api/metrics`)).json()) as { system: { workers: { id: string; pid: number; heapPercent: number; rssMB: number }[] } }).system
          .workers;
      const before = await waitFor(async () => ((await liveWorkers()).length === 2 ? liveWorkers() : undefined), { what: 'two live workers in /api/metrics' });
      expect(before.map((w) => w.pid).sort()).toEqual(
        processes
          .slice(1)
          .map((p) => p.proc.pid)
          .sort(),
      );
      expect(before[0]).toEqual(
        expect.objectContaining({ heapPercent: expect.any(Number), rssMB: expect.any(Number), concurrency: 10, active: expect.any(Number), version: expect.any(String) }),
      );

      // Queued runs that come due while Redis is down (AOF keeps them; appendfsync everysec, and
      // redis-server flushes on SIGTERM).
      const queued = await addRuns(queues, 20, 1500);

      const resumeMs: number[] = [];
      for (const downMs of [0, 10_000]) {
        await redis.restart({ downMs });
        const backAt = Date.now();
        resumeMs.push(await timeToResume(queues));
        await waitFor(async () => (await cronRunsSince(queues, backAt)) >= 1, { timeoutMs: 20_000, what: `cron runs after a ${downMs} ms outage` });
        for (const p of processes) expect(p.proc.exitCode, p.output().slice(-1500)).toBe(null);
      }
      console.log(`[measure] time to resume (Redis answering → a new run completed): ${resumeMs[0]} ms after a plain restart, ${resumeMs[1]} ms after a 10 s outage`);

      await waitFor(() => allCompleted(queues, queued), { timeoutMs: 20_000, what: 'the runs queued before the restart' });
      // The heartbeats were lost with the non-persisted seconds of the outage, or expired: both workers are back.
      await waitFor(async () => (await liveWorkers()).length === 2, { what: 'both workers live again in /api/metrics' });
      expect(await queues.agents.getFailedCount()).toBe(0);

      // One line per outage and connection, not one per retry.
      for (const p of processes) {
        const losses = p
          .output()
          .split('\n')
          .filter((l) => l.includes('redis connection lost')).length;
        expect(losses).toBeGreaterThanOrEqual(2);
        expect(losses).toBeLessThanOrEqual(2 * 3);
        const refusals = p
          .output()
          .split('\n')
          .filter((l) => l.includes('ECONNREFUSED')).length;
        expect(refusals).toBeLessThanOrEqual(losses);
      }

      for (const p of processes) p.kill('SIGTERM');
      for (const p of processes) expect(await p.exited).toBe(0);
    },
    120_000,
  );
});
