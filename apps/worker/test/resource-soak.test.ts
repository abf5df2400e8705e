import { afterAll, describe, expect, it } from 'vitest';
import { createKeys, createQueues, freePort, listLiveWorkers, loadRegistry, runJobOptions, type Queues } from '@werkpilot/shared';
import { agentSource, onSharedRedis, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();

/** 1000 in the suite; `SOAK_RUNS=10000` for the figures in the lifecycle notes. */
const RUNS = Number(process.env.SOAK_RUNS ?? 1000);
const AGENTS = Array.from({ length: 40 }, (_, i) => `noop-${i}`);
const agentsDir = writeAgentsDir(Object.fromEntries(AGENTS.map((name) => [`${name}.ts`, agentSource({ name }, 'ctx.log.info("tick"); return { ok: true };')])));

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

async function enqueue(queues: Queues, count: number): Promise<void> {
  const registry = await loadRegistry(agentsDir);
  for (let done = 0; done < count; done += 500) {
    await queues.agents.addBulk(
      Array.from({ length: Math.min(500, count - done) }, (_, i) => {
        const name = AGENTS[(done + i) % AGENTS.length]!;
        return { name, data: { agent: name, trigger: 'manual' as const }, opts: runJobOptions(registry.require(name), { dlqRetain: 100, completedRetain: 1000 }) };
      }),
    );
  }
}

async function finished(queues: Queues): Promise<number> {
  const counts = await queues.agents.getJobCounts('waiting', 'prioritized', 'active', 'delayed');
  return counts.waiting! + counts.prioritized! + counts.active! + counts.delayed!;
}

/**
 * Over a short soak the heap floor is dominated by when V8 last ran a full collection, so the heap
 * is judged only on a long one (SOAK_RUNS >= 5000, hundreds of samples); connections and listeners
 * always. The title says which.
 */
const JUDGES_HEAP = RUNS >= 5000;

describe('resource hygiene', () => {
  it.skipIf(onSharedRedis('counts every client of its Redis'))(
    `keeps a fixed number of Redis connections and no listener leaks${JUDGES_HEAP ? ', and a steady heap,' : ''} over ${RUNS} runs`,
    async () => {
      const prefix = uniquePrefix();
      const keys = createKeys(prefix);
      const client = redis.client();
      const queues = createQueues({ connection: client, keys });
      toClose.push(() => queues.close());
      const clientCount = async () => ((await client.client('LIST')) as string).split('\n').filter((l: string) => l.trim() !== '').length;
      const baseline = await clientCount(); // this test's own connections

      const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, HEARTBEAT_INTERVAL_MS: '200', PORT: String(await freePort()), NODE_OPTIONS: '--expose-gc' };
      const worker = startApp('worker', { ...env, LOG_LEVEL: 'warn' });
      await waitFor(async () => (await listLiveWorkers({ redis: client, keys })).length === 1, { timeoutMs: 20_000, what: 'the worker online' });
      // The worker's heap as its heartbeats report it, sampled through the soak. Young-generation
      // collections run constantly under load, so the lowest sample of a stretch approximates the live
      // heap then; a leak shows as a floor that keeps rising.
      const samples: number[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const [w] = await listLiveWorkers({ redis: client, keys });
          if (w?.heapUsedMB !== undefined) samples.push(w.heapUsedMB);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      // Warm up (module caches, Lua scripts, JIT), then measure.
      await enqueue(queues, 200);
      await waitFor(async () => (await finished(queues)) === 0, { timeoutMs: 30_000, what: 'warm-up runs' });
      const workerConnections = (await clientCount()) - baseline;
      samples.length = 0;

      await enqueue(queues, RUNS);
      await waitFor(async () => (await finished(queues)) === 0, { timeoutMs: 240_000, intervalMs: 200, what: `${RUNS} runs` });
      expect(await queues.agents.getFailedCount()).toBe(0);
      const workerConnectionsAfter = (await clientCount()) - baseline;
      sampling = false;
      await sampler;
      const quarter = Math.max(1, Math.floor(samples.length / 4));
      const heapBefore = Math.min(...samples.slice(0, quarter));
      const heapAfter = Math.min(...samples.slice(-quarter));

      const scheduler = startApp('scheduler', { ...env, LOG_LEVEL: 'warn' });
      await waitFor(async () => (await fetch(`http://127.0.0.1:${env.PORT}/healthz`).catch(() => undefined))?.ok, { timeoutMs: 20_000, what: 'the scheduler up' });
      await new Promise((r) => setTimeout(r, 500)); // let its lazily opened connections settle
      const schedulerConnections = (await clientCount()) - baseline - workerConnectionsAfter;

      console.log(
        `[measure] ${RUNS} runs: worker Redis connections ${workerConnections} → ${workerConnectionsAfter}; scheduler ${schedulerConnections}; ` +
          `worker heap floor ${heapBefore} MB (first quarter) → ${heapAfter} MB (last quarter), ${samples.length} samples`,
      );
      expect(workerConnectionsAfter).toBe(workerConnections);
      if (JUDGES_HEAP) expect(heapAfter).toBeLessThan(heapBefore * 1.5 + 10);
      for (const app of [worker, scheduler]) {
        expect(app.output()).not.toContain('MaxListenersExceededWarning');
        app.kill('SIGTERM');
        expect(await app.exited).toBe(0);
      }
    },
    300_000,
  );
});
