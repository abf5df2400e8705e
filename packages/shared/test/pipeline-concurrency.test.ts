import { describe, expect, it } from 'vitest';
import { getPipeline, triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, retention, sleep } from './_dependency-cluster.js';

const redis = useTestRedis();

describe('many pipelines at once', () => {
  it("runs 200 concurrent pipelines of 'queue' agents on three workers: every run once, in order, one run per agent at a time, none lost", async () => {
    const PIPELINES = 200;
    const active = new Map<string, number>();
    let overlaps = 0;
    const spans = new Map<string, { start: number; end: number }>();
    const work = (name: string) => async (ctx: { runId: string }) => {
      const start = Date.now();
      active.set(name, (active.get(name) ?? 0) + 1);
      if (active.get(name)! > 1) overlaps += 1;
      await sleep(Math.random() * 4);
      active.set(name, active.get(name)! - 1);
      spans.set(ctx.runId, { start, end: Date.now() });
    };
    const c = await dependencyCluster(redis, [
      { name: 'source', overlap: 'queue', run: work('source') },
      { name: 'transform', overlap: 'queue', dependsOn: ['source'], priority: 1, run: work('transform') },
      { name: 'load', overlap: 'queue', dependsOn: ['transform'], run: work('load') },
      { name: 'report', overlap: 'queue', dependsOn: ['load', 'source'], priority: 2, run: work('report') },
    ]);
    await Promise.all(['w1', 'w2', 'w3'].map((id) => c.startWorker({ id, concurrency: 10 })));
    const deps = { queue: c.queues.agents, registry: c.registry, retention: { ...retention, completedRetain: 10_000 }, redis: c.redis, keys: c.keys, parkedRecheckMs: 10 * 60_000 };
    const ids = await Promise.all(Array.from({ length: PIPELINES }, async () => (await triggerRun(deps, 'source', { withDependents: true })).pipelineId!));

    // Parked runs re-check only after 10 minutes here, so a lost promotion would hang this wait.
    const statuses = await waitFor(
      async () => {
        const all = await Promise.all(ids.map((id) => getPipeline(deps, id)));
        return all.every((s) => s.isFinished) ? all : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'every pipeline to finish' },
    );

    expect(statuses.flatMap((s) => s.runs.filter((r) => r.outcome !== 'success'))).toEqual([]);
    for (const s of statuses) {
      const at = Object.fromEntries(s.runs.map((r) => [r.agent, spans.get(r.runId)!]));
      expect(at.transform!.start).toBeGreaterThanOrEqual(at.source!.end);
      expect(at.load!.start).toBeGreaterThanOrEqual(at.transform!.end);
      expect(at.report!.start).toBeGreaterThanOrEqual(Math.max(at.load!.end, at.source!.end));
    }
    expect(overlaps).toBe(0);
    const states = await c.state.getMany(['source', 'transform', 'load', 'report']);
    for (const state of states.values()) expect(state).toMatchObject({ successes: PIPELINES, skipped: 0, failures: 0 });
  }, 90_000);
});
