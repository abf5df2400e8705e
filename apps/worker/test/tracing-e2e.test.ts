import { readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import {
  REPO_ROOT,
  agentSource,
  startApp,
  startOtlpReceiver,
  stopApps,
  uniquePrefix,
  useTestRedis,
  waitFor,
  writeAgentsDir,
  type AppProcess,
  type ReceivedSpan,
} from '@werkpilot/test-support';

const redis = useTestRedis();
const TOKEN = 'test-token';

// A pipeline of three: `collect`, then `enrich` and `notify` at once (both depend on `collect`).
// The two dependents work 300 ms each, so with one slot per worker they land on both workers.
// `notify` opens a span of its own with the OpenTelemetry API, as an agent's HTTP client or LLM SDK would.
const agentsDir = writeAgentsDir({
  'collect.ts': agentSource({ name: 'collect' }, "ctx.span.setAttribute('app.rows', 3); ctx.span.addEvent('collected'); return 3;"),
  'enrich.ts': agentSource({ name: 'enrich', dependsOn: ['collect'] }, 'await new Promise((r) => setTimeout(r, 300)); return 1;'),
  'notify.ts': `import { trace } from '@opentelemetry/api';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'notify',
  dependsOn: ['collect'],
  async run(ctx) {
    await trace.getTracer('notify-agent').startActiveSpan('send notification', async (span) => {
      await new Promise((r) => setTimeout(r, 300));
      span.end();
    });
    return 'sent';
  },
});
`,
});

/** The module recorder (packages/test-support/hooks): each process writes the modules it loaded to a file. */
const RECORDER = path.join(REPO_ROOT, 'packages', 'test-support', 'hooks', 'module-recorder.mjs');
const moduleLogs: string[] = [];
afterAll(() => {
  for (const file of moduleLogs) rmSync(file, { force: true });
});
function recordingModules(): { env: Record<string, string>; loaded(): string[] } {
  const file = path.join(tmpdir(), `werkpilot-modules-${randomBytes(6).toString('hex')}.txt`);
  moduleLogs.push(file);
  return {
    env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${RECORDER}`.trim(), WERKPILOT_TEST_MODULE_LOG: file },
    loaded: () => readFileSync(file, 'utf8').split('\n').filter(Boolean),
  };
}

/** What tracing loads only when it is on: the SDK, the OTLP exporters, BullMQ's adapter, our SDK wiring. */
const SDK_MODULE = /@opentelemetry\/(sdk-|exporter-|otlp-|resources|core|context-async-hooks)|\/bullmq-otel\/|\/tracing-sdk\.[jt]s$/;

/** The environment's own OTEL_* settings must not leak into these processes. */
const NO_OTEL_ENV = Object.fromEntries(
  Object.keys(process.env)
    .filter((k) => k.startsWith('OTEL_'))
    .map((k) => [k, '']),
);

async function startCluster(env: Record<string, string>) {
  const port = await freePort();
  const prefix = uniquePrefix();
  const base = { ...NO_OTEL_ENV, REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port), DASHBOARD_TOKEN: TOKEN, WORKER_CONCURRENCY: '1', ...env };
  const recorders = [recordingModules(), recordingModules(), recordingModules()];
  const workers = [startApp('worker', { ...base, ...recorders[0]!.env }), startApp('worker', { ...base, ...recorders[1]!.env })];
  const scheduler = startApp('scheduler', { ...base, ...recorders[2]!.env });
  const api = async (route: string, init: RequestInit & { headers?: Record<string, string> } = {}) => {
    const res = await fetch(`http://127.0.0.1:${port}${route}`, {
      ...init,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...init.headers },
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  await scheduler.waitForLog(/dashboard on/, 30_000);
  await Promise.all(workers.map((w) => w.waitForLog(/worker online/, 30_000)));
  // Runs are gated until their agent's boot check passed.
  await waitFor(
    async () => {
      const { body } = await api('/api/metrics');
      return Object.values(body.agents ?? {}).length === 3 && Object.values(body.agents).every((a: any) => a.boot?.status === 'ok');
    },
    { timeoutMs: 40_000, what: 'every agent to pass its boot check' },
  );
  const all: AppProcess[] = [scheduler, ...workers];
  return {
    api,
    workers,
    scheduler,
    loadedModules: () => recorders.map((r) => r.loaded()),
    stop: () => stopApps(all),
  };
}

async function runPipeline(api: Awaited<ReturnType<typeof startCluster>>['api'], headers: Record<string, string> = {}) {
  const queued = await api('/api/agents/collect/run', { method: 'POST', body: JSON.stringify({ withDependents: true }), headers });
  expect(queued.status).toBe(202);
  const runs = queued.body.runs as { agent: string; runId: string }[];
  expect(runs.map((r) => r.agent).sort()).toEqual(['collect', 'enrich', 'notify']);
  const views = await waitFor(
    async () => {
      const all = await Promise.all(runs.map(async (r) => (await api(`/api/runs/${encodeURIComponent(r.runId)}`)).body));
      return all.every((v) => v.state === 'completed') ? all : undefined;
    },
    { timeoutMs: 30_000, what: 'the three pipeline runs to complete' },
  );
  return { pipelineId: queued.body.pipelineId as string, runs, views: Object.fromEntries(views.map((v) => [v.agent, v])) as Record<string, any> };
}

describe('OpenTelemetry traces across real processes', () => {
  it('exports one connected trace for a pipeline run across two workers, with run ids and trace ids cross-linked', async () => {
    const receiver = await startOtlpReceiver();
    // The caller's own trace (say, a CI job's): the pipeline joins it through the traceparent header.
    const callerTraceId = randomBytes(16).toString('hex');
    const callerSpanId = randomBytes(8).toString('hex');
    const cluster = await startCluster({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    try {
      const { pipelineId, runs, views } = await runPipeline(cluster.api, { traceparent: `00-${callerTraceId}-${callerSpanId}-01` });
      const runIdOf = Object.fromEntries(runs.map((r) => [r.agent, r.runId]));

      // The run view, the job's result and the run's events name the trace.
      for (const agent of ['collect', 'enrich', 'notify']) {
        expect(views[agent].traceId).toBe(callerTraceId);
        expect(views[agent].result.traceId).toBe(callerTraceId);
      }
      const events = (await cluster.api('/api/events/recent')).body as any[];
      const completed = (Array.isArray(events) ? events : (events as any).events).filter((e: any) => e.type === 'agent:completed' && e.data.pipelineId === pipelineId);
      expect(completed.map((e: any) => e.data.traceId)).toEqual([callerTraceId, callerTraceId, callerTraceId]);

      const inTrace = () => receiver.spans().filter((s) => s.traceId === callerTraceId);
      const one = (name: string, match: (s: ReceivedSpan) => boolean = () => true): ReceivedSpan => {
        const found = inTrace().filter((s) => s.name === name && match(s));
        expect(found, `spans named ${name}: ${JSON.stringify(found)}`).toHaveLength(1);
        return found[0]!;
      };
      const ofRun = (agent: string) => (s: ReceivedSpan) => s.attributes['werkpilot.run.id'] === runIdOf[agent] || s.attributes['bullmq.job.id'] === runIdOf[agent];
      await waitFor(() => inTrace().filter((s) => s.name.startsWith('run ') || s.name === 'send notification').length === 4, {
        timeoutMs: 15_000,
        what: () => `the run spans at the receiver; got ${JSON.stringify(receiver.spans().map((s) => [s.name, s.traceId]))}`,
      });

      // trigger → enqueue (BullMQ) → per run: wait for dependencies, process (BullMQ) → run → gate.
      const trigger = one('pipeline collect');
      expect(trigger.parentSpanId).toBe(callerSpanId);
      expect(trigger.resource['service.name']).toBe('werkpilot-scheduler');
      expect(trigger.attributes).toMatchObject({ 'werkpilot.agent': 'collect', 'werkpilot.pipeline.id': pipelineId, 'werkpilot.run.id': runIdOf.collect });
      const enqueue = one('addBulk agents');
      expect(enqueue.parentSpanId).toBe(trigger.spanId);
      expect(enqueue.scope).toBe('bullmq');

      const workerIds = new Set<unknown>();
      for (const agent of ['collect', 'enrich', 'notify']) {
        const processed = one('process agents', ofRun(agent));
        expect(processed.parentSpanId).toBe(enqueue.spanId);
        workerIds.add(processed.resource['service.instance.id']);
        const run = one(`run ${agent}`);
        expect(run.parentSpanId).toBe(processed.spanId);
        expect(run.resource['service.name']).toBe('werkpilot-worker');
        expect(run.attributes).toMatchObject({
          'werkpilot.run.id': runIdOf[agent],
          'werkpilot.agent': agent,
          'werkpilot.run.attempt': 1,
          'werkpilot.pipeline.id': pipelineId,
          'werkpilot.run.trigger': agent === 'collect' ? 'manual' : 'pipeline',
          'werkpilot.run.outcome': 'success',
          'werkpilot.worker.id': processed.resource['service.instance.id'],
        });
        const gate = one(`gate ${agent}`);
        expect(gate.parentSpanId).toBe(run.spanId);
        expect(gate.attributes['werkpilot.gate.decision']).toBe('run');
        expect(gate.startMs).toBeGreaterThanOrEqual(run.startMs - 1);
        expect(gate.endMs).toBeLessThanOrEqual(run.endMs + 1);
      }
      // The dependents waited for `collect`: from the enqueue until their gate, after collect's run ended.
      for (const agent of ['enrich', 'notify']) {
        const wait = one(`wait for dependencies ${agent}`);
        expect(wait.parentSpanId).toBe(enqueue.spanId);
        expect(wait.attributes['werkpilot.run.id']).toBe(runIdOf[agent]);
        expect(wait.endMs).toBeGreaterThanOrEqual(one('run collect').endMs - 1);
      }
      expect(inTrace().some((s) => s.name === 'wait for dependencies collect')).toBe(false);
      // The dependents ran at once on the two workers.
      expect(workerIds.size).toBe(2);

      // The agent's own span joined its run's span (ctx.span / the active context); ctx.span took attributes and events.
      expect(one('send notification').parentSpanId).toBe(one('run notify').spanId);
      expect(one('send notification').scope).toBe('notify-agent');
      expect(one('run collect').attributes['app.rows']).toBe(3);
      expect(one('run collect').events.map((e) => e.name)).toEqual(['collected']);

      // Every span of these runs is in this one trace; none started a trace of its own.
      const runIds = new Set(Object.values(runIdOf));
      const strays = receiver
        .spans()
        .filter((s) => (runIds.has(s.attributes['werkpilot.run.id'] as string) || runIds.has(s.attributes['bullmq.job.id'] as string)) && s.traceId !== callerTraceId);
      expect(strays).toEqual([]);

      // The SDK was loaded in every process: the module check of the next test can fail.
      for (const loaded of cluster.loadedModules()) expect(loaded.some((url) => SDK_MODULE.test(url))).toBe(true);
    } finally {
      await cluster.stop();
      await receiver.close();
    }
  }, 120_000);

  it('loads no OpenTelemetry SDK, exporter or BullMQ adapter when no OTLP endpoint is set, and shows no trace id', async () => {
    const cluster = await startCluster({});
    try {
      const { views } = await runPipeline(cluster.api);
      for (const view of Object.values(views)) {
        expect(view.traceId).toBeNull();
        expect(view.result.traceId).toBeUndefined();
      }
    } finally {
      await cluster.stop();
    }
    for (const loaded of cluster.loadedModules()) {
      expect(loaded.length).toBeGreaterThan(100);
      expect(loaded.filter((url) => SDK_MODULE.test(url))).toEqual([]);
    }
  }, 120_000);
});
