import { describe, expect, it } from 'vitest';
import { disableAgent, getPipeline, triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, retention, sleep } from './_dependency-cluster.js';

const redis = useTestRedis();

describe('pipeline runs (withDependents)', () => {
  it('runs the whole subgraph below a root in a valid topological order, each run carrying the pipeline id', async () => {
    const started: { agent: string; at: number; pipelineId: unknown; data: unknown }[] = [];
    const finished = new Map<string, number>();
    const graph: Record<string, string[]> = {
      'crm-sync': [],
      enrich: ['crm-sync'],
      'lead-scorer': ['crm-sync', 'enrich'],
      'email-drafter': ['lead-scorer'],
      report: ['lead-scorer', 'enrich'],
      'unrelated-root': [],
      'unrelated-leaf': ['unrelated-root'],
    };
    const c = await dependencyCluster(
      redis,
      Object.entries(graph).map(([name, dependsOn], i) => ({
        name,
        dependsOn,
        priority: ((i % 3) + 1) as 1 | 2 | 3,
        run: async (ctx) => {
          const job = await c.queues.agents.getJob(ctx.runId);
          started.push({ agent: name, at: Date.now(), pipelineId: job?.data.pipelineId, data: ctx.data });
          await sleep(20 + (i % 2) * 40);
          finished.set(name, Date.now());
        },
      })),
    );
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 3 }), c.startWorker({ id: 'w2', concurrency: 3 })]);
    const deps = { queue: c.queues.agents, registry: c.registry, retention, redis: c.redis, keys: c.keys };
    const { runId, pipelineId } = await triggerRun(deps, 'crm-sync', { withDependents: true, data: { since: '2026-11-01' } });
    expect(pipelineId).toBeTruthy();
    expect(runId).toBe(`pipeline:${pipelineId}:crm-sync`);

    const status = await waitFor(
      async () => {
        const s = await getPipeline(deps, pipelineId!);
        return s.isFinished ? s : undefined;
      },
      { timeoutMs: 20_000, what: 'the pipeline to finish' },
    );

    const subgraph = ['crm-sync', 'enrich', 'lead-scorer', 'email-drafter', 'report'];
    expect(started.map((s) => s.agent).sort()).toEqual([...subgraph].sort());
    for (const s of started) {
      expect(s.pipelineId).toBe(pipelineId);
      expect(s.data).toEqual({ since: '2026-11-01' });
      for (const dep of graph[s.agent]!) expect(s.at).toBeGreaterThanOrEqual(finished.get(dep)!);
    }
    expect(status.root).toBe('crm-sync');
    expect(status.runs.map((r) => r.agent)).toEqual(c.registry.inDependencyOrder(subgraph));
    expect(status.runs.every((r) => r.outcome === 'success' && r.state === 'completed')).toBe(true);
  });

  it('lists a skipped pipeline run with its reasons, and skips what depends on it', async () => {
    const c = await dependencyCluster(redis, [{ name: 'extract' }, { name: 'transform', dependsOn: ['extract', 'lookup'] }, { name: 'lookup' }, { name: 'load', dependsOn: ['transform'] }]);
    await c.startWorker({ concurrency: 2 });
    await disableAgent({ redis: c.redis, keys: c.keys }, 'lookup');
    const deps = { queue: c.queues.agents, registry: c.registry, retention, redis: c.redis, keys: c.keys };
    const { pipelineId } = await triggerRun(deps, 'extract', { withDependents: true });
    const status = await waitFor(
      async () => {
        const s = await getPipeline(deps, pipelineId!);
        return s.isFinished ? s : undefined;
      },
      { what: 'the pipeline to finish' },
    );
    expect(status.runs.map((r) => [r.agent, r.outcome, r.reasons])).toEqual([
      ['extract', 'success', undefined],
      ['transform', 'skipped', ['dependency lookup disabled']],
      ['load', 'skipped', ['dependency transform skipped: dependency lookup disabled']],
    ]);
  });

  it('answers an unknown pipeline id with a clear error', async () => {
    const c = await dependencyCluster(redis, [{ name: 'a' }]);
    await expect(getPipeline({ queue: c.queues.agents, redis: c.redis, keys: c.keys }, 'nope')).rejects.toThrow('unknown run pipeline nope');
  });
});
