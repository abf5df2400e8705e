import { describe, expect, it } from 'vitest';
import { EventBus, createKeys, createLogger, freePort, type BusEvent } from '@werkpilot/shared';
import { agentSource, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();
const TOKEN = 'test-token';

const agentsDir = writeAgentsDir({
  'source.ts': agentSource({ name: 'source' }, 'await new Promise((r) => setTimeout(r, 50)); return 1;', 'healthCheck: () => ({ healthy: true }),'),
  'transform.ts': agentSource({ name: 'transform', dependsOn: ['source'], priority: 1 }, 'return 2;'),
  'load.ts': agentSource({ name: 'load', dependsOn: ['transform'] }, 'await new Promise((r) => setTimeout(r, 30)); return 3;'),
  'report.ts': agentSource({ name: 'report', dependsOn: ['load', 'source'], priority: 2 }, 'return 4;'),
  'warehouse.ts': agentSource({ name: 'warehouse' }, 'return 0;', "healthCheck: () => ({ healthy: false, reason: 'warehouse unreachable' }),"),
  'warehouse-export.ts': agentSource({ name: 'warehouse-export', dependsOn: ['warehouse'] }),
});

describe('dependency-aware execution across real processes', () => {
  it('boots in layers, runs a pipeline in order on two workers, and skips dependents of a disabled agent with a readable reason', async () => {
    const prefix = uniquePrefix();
    const port = await freePort();
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port), DASHBOARD_TOKEN: TOKEN };
    const workers = [startApp('worker', env), startApp('worker', env)];
    const scheduler = startApp('scheduler', env);
    await scheduler.waitForLog(/dashboard on/, 30_000);
    const api = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
      });
      return { status: res.status, body: (await res.json()) as any };
    };

    const booted = await waitFor(
      async () => {
        const { body } = await api('/api/metrics');
        return Object.values(body.agents).every((a: any) => a.boot && a.boot.status !== 'checking') ? body : undefined;
      },
      { timeoutMs: 40_000, what: 'every agent to have a boot outcome in /api/metrics' },
    );
    expect(booted.agents.source.boot).toMatchObject({ status: 'ok', layer: 0 });
    expect(booted.agents.report.boot).toMatchObject({ status: 'ok', layer: 3 });
    expect(booted.agents.warehouse.boot).toMatchObject({ status: 'failed', reason: 'warehouse unreachable' });
    expect(booted.agents['warehouse-export'].boot).toMatchObject({ status: 'blocked', reason: 'dependency warehouse failed boot: warehouse unreachable' });
    expect(booted.agents.source.enabled).toBe(true);

    const bus = new EventBus({ redis: redis.client(), keys: createKeys(prefix), log: createLogger({ level: 'silent', name: 'test' }) });
    const events = async () => bus.recent(1000);
    expect((await events()).filter((e) => e.type === 'boot:layer').map((e) => e.data.layer)).toEqual([0, 1, 2, 3]);

    const queued = await api('/api/agents/source/run', { method: 'POST', body: JSON.stringify({ withDependents: true }) });
    expect(queued.status).toBe(202);
    const { pipelineId } = queued.body as { runId: string; pipelineId: string };
    expect(pipelineId).toBeTruthy();
    const completedOf = (all: BusEvent[]) => all.filter((e) => e.type === 'agent:completed' && e.data.pipelineId === pipelineId).map((e) => e.agent);
    const order = await waitFor(
      async () => {
        const done = completedOf(await events());
        return done.length === 4 ? done : undefined;
      },
      { timeoutMs: 30_000, what: 'the four pipeline runs to complete' },
    ).catch(async (err: Error) => {
      const seen = (await events()).filter((e) => e.agent).map((e) => [e.type, e.agent, e.data.runId, e.data.reasons ?? e.data.error]);
      throw new Error(
        `${err.message}\nevents: ${JSON.stringify(seen)}\n${workers
          .map((w) =>
            w
              .output()
              .split('\n')
              .filter((l) => !l.includes('"level":30'))
              .join('\n')
              .slice(-3000),
          )
          .join('\n---\n')}`,
      );
    });
    expect(order).toEqual(['source', 'transform', 'load', 'report']);

    expect((await api('/api/agents/transform/disable', { method: 'POST' })).status).toBe(200);
    const second = await api('/api/agents/source/run', { method: 'POST', body: JSON.stringify({ withDependents: true }) });
    const skips = await waitFor(
      async () => {
        const skipped = (await events()).filter((e) => e.type === 'agent:skipped' && e.data.pipelineId === second.body.pipelineId);
        return skipped.length === 3 ? skipped : undefined;
      },
      { timeoutMs: 30_000, what: 'transform, load and report of the second pipeline to be skipped' },
    );
    expect(Object.fromEntries(skips.map((e) => [e.agent, e.data.reasons]))).toEqual({
      transform: ['disabled'],
      load: ['dependency transform disabled'],
      report: ['dependency load skipped: dependency transform disabled'],
    });
    const unhealthy = (await events()).filter((e) => e.type === 'dependency:unhealthy' && e.agent === 'load');
    expect(unhealthy.at(-1)!.data.reasons).toEqual(['dependency transform disabled']);
    // The snapshot behind /api/metrics may be up to METRICS_SNAPSHOT_MAX_AGE_MS (2 s) old.
    const metrics = await waitFor(
      async () => {
        const { body } = await api('/api/metrics');
        return body.agents.transform.skipped === 1 ? body : undefined;
      },
      { what: 'the skipped run of transform in /api/metrics' },
    );
    expect(metrics.agents.transform).toMatchObject({ enabled: false, skipped: 1, failures: 0 });
    expect(metrics.deadLetterQueueSize).toBe(0);

    await bus.close();
    await stopApps([scheduler, ...workers]);
  }, 90_000);
});
