import { afterEach, describe, expect, it } from 'vitest';
import {
  DeadLetterQueue,
  agentToggleRules,
  createLogger,
  createQueues,
  createRunAdmission,
  disableAgent,
  skipCausesKey,
  type AgentDefinition,
  createRunTracer,
  createTriggerTracer,
  lookupRun,
  reconcileJobSchedulers,
  triggerRun,
  startTracing,
  type Tracing,
} from '@werkpilot/shared';
import { createAgentCluster, startOtlpReceiver, useTestRedis, waitFor, type AgentCluster, type OtlpReceiver } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };

// Tracing registers the SDK globally: each test starts its own and shuts it down.
let opened: { tracing?: Tracing; receiver?: OtlpReceiver; cluster?: AgentCluster } = {};
afterEach(async () => {
  await opened.cluster?.close();
  await opened.tracing?.shutdown();
  await opened.receiver?.close();
  opened = {};
});

/** A cluster whose worker admits runs (gate, dependency waits) and traces them. */
async function tracedCluster(tracing: Tracing, agents: Partial<AgentDefinition>[], concurrency = 1): Promise<AgentCluster> {
  const cluster = await createAgentCluster(redis, agents, { log });
  opened.cluster = cluster;
  await cluster.startWorker({
    concurrency,
    wire: (own, keys) => {
      const admission = createRunAdmission({ redis: own, keys, log, recheckMs: 10 * 60_000, rules: agentToggleRules() });
      return { admission, telemetry: tracing.telemetry, tracer: createRunTracer({ tracer: tracing.tracer, workerId: 'worker-1' }), cleanup: () => admission.close() };
    },
  });
  return cluster;
}

async function traceTo(protocol: 'http/json' | 'http/protobuf'): Promise<{ tracing: Tracing; receiver: OtlpReceiver }> {
  const receiver = await startOtlpReceiver();
  const tracing = await startTracing({ settings: { endpoint: `${receiver.url}/v1/traces`, protocol }, defaultServiceName: 'werkpilot-test', log, instanceId: 'test-1' });
  opened = { ...opened, receiver, tracing };
  return { tracing, receiver };
}

describe('OpenTelemetry tracing', () => {
  it('exports OTLP protobuf by default, as the specification says', async () => {
    const { tracing, receiver } = await traceTo('http/protobuf');
    let traceId = '';
    await createTriggerTracer(tracing.tracer).trace('crm-sync', { isPipeline: false }, async () => {
      const { trace } = await import('@opentelemetry/api');
      traceId = trace.getActiveSpan()!.spanContext().traceId;
      return { runId: 'run-4711' };
    });
    await tracing.shutdown();
    expect(receiver.requests).toHaveLength(1);
    const [request] = receiver.requests;
    expect(request!.contentType).toBe('application/x-protobuf');
    // Protobuf carries the trace id as its 16 raw bytes, and strings as they are.
    expect(request!.body.includes(Buffer.from(traceId, 'hex'))).toBe(true);
    for (const text of ['trigger crm-sync', 'werkpilot.run.id', 'run-4711', 'werkpilot-test']) expect(request!.body.includes(Buffer.from(text))).toBe(true);
  });

  it('gives each attempt of a cron run a trace of its own and shows the last one on the run, failures as errors', async () => {
    const { tracing, receiver } = await traceTo('http/json');
    const cluster = await createAgentCluster(
      redis,
      [
        {
          name: 'nightly-export',
          schedule: { cron: '* * * * * *' },
          retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 50 } },
          run: async () => {
            throw new Error('upstream said 503');
          },
        },
      ],
      { log },
    );
    opened.cluster = cluster;
    await cluster.startWorker({ wire: () => ({ telemetry: tracing.telemetry, tracer: createRunTracer({ tracer: tracing.tracer, workerId: 'worker-1' }) }) });
    await reconcileJobSchedulers({ queue: cluster.queues.agents, registry: cluster.registry, retention, log });
    const dlq = new DeadLetterQueue(cluster.queues.agents);
    const [dead] = await waitFor(async () => ((await dlq.size()) > 0 ? dlq.list() : undefined), { timeoutMs: 15_000, what: 'a cron run in the DLQ' });
    const view = await lookupRun(cluster.queues.agents, dead!.id);
    expect(view.attempts.made).toBe(2);

    const runSpans = () => receiver.spans().filter((s) => s.name === 'run nightly-export' && s.attributes['werkpilot.run.id'] === view.id);
    await waitFor(() => runSpans().length === 2, { timeoutMs: 10_000, what: 'both attempts’ run spans at the receiver' });
    const [first, second] = runSpans().sort((a, b) => Number(a.attributes['werkpilot.run.attempt']) - Number(b.attributes['werkpilot.run.attempt']));
    // No trigger carried a context into a cron run: each attempt's BullMQ `process` span is a root.
    expect(first!.traceId).not.toBe(second!.traceId);
    expect(view.traceId).toBe(second!.traceId);
    for (const [span, attempt] of [
      [first!, 1],
      [second!, 2],
    ] as const) {
      expect(span.attributes).toMatchObject({ 'werkpilot.run.attempt': attempt, 'werkpilot.run.outcome': 'failure', 'werkpilot.run.trigger': 'cron', 'werkpilot.worker.id': 'worker-1' });
      expect(span.statusCode).toBe(2);
      expect(span.events.find((e) => e.name === 'exception')?.attributes['exception.message']).toBe('upstream said 503');
      const processed = receiver.spans().find((s) => s.spanId === span.parentSpanId)!;
      expect(processed).toMatchObject({ name: 'process agents', parentSpanId: '', traceId: span.traceId, scope: 'bullmq' });
      expect(span.resource).toMatchObject({ 'service.name': 'werkpilot-test', 'service.instance.id': 'test-1' });
    }
  });

  it('shows no trace id for a run whose trace the sampler dropped, and exports nothing of it', async () => {
    const sampler = process.env.OTEL_TRACES_SAMPLER;
    process.env.OTEL_TRACES_SAMPLER = 'always_off';
    let traced: { tracing: Tracing; receiver: OtlpReceiver };
    try {
      traced = await traceTo('http/json');
    } finally {
      if (sampler === undefined) delete process.env.OTEL_TRACES_SAMPLER;
      else process.env.OTEL_TRACES_SAMPLER = sampler;
    }
    const { tracing, receiver } = traced;
    const cluster = await createAgentCluster(redis, [{ name: 'crm-sync', run: async (ctx) => ctx.span.isRecording() }], { log });
    opened.cluster = cluster;
    await cluster.startWorker({ wire: () => ({ telemetry: tracing.telemetry, tracer: createRunTracer({ tracer: tracing.tracer, workerId: 'worker-1' }) }) });
    const { runId } = await triggerRun({ queue: cluster.queues.agents, registry: cluster.registry, retention, tracer: createTriggerTracer(tracing.tracer) }, 'crm-sync');
    const view = await waitFor(
      async () => {
        const v = await lookupRun(cluster.queues.agents, runId);
        return v.state === 'completed' ? v : undefined;
      },
      { what: 'the run to complete' },
    );
    expect(view.result).toEqual({ outcome: 'success', result: false, durationMs: expect.any(Number), workerId: 'worker-1' });
    expect(view.traceId).toBeNull();
    await tracing.flush();
    expect(receiver.requests).toEqual([]);
  });

  it('traces a skipped run: the gate says why, the run records it, its skip cause and its trace id', async () => {
    const { tracing, receiver } = await traceTo('http/json');
    const cluster = await tracedCluster(tracing, [{ name: 'crm-sync' }, { name: 'lead-scorer', dependsOn: ['crm-sync'] }]);
    await disableAgent({ redis: cluster.redis, keys: cluster.keys }, 'crm-sync');
    // The scheduler's queue, with BullMQ's telemetry: the enqueue carries the trigger's context to the worker.
    const traced = createQueues({ connection: cluster.redis, keys: cluster.keys, telemetry: tracing.telemetry });
    const { runId } = await triggerRun({ queue: traced.agents, registry: cluster.registry, retention, tracer: createTriggerTracer(tracing.tracer) }, 'lead-scorer');
    await traced.close();
    const view = await waitFor(
      async () => {
        const v = await lookupRun(cluster.queues.agents, runId);
        return v.state === 'completed' ? v : undefined;
      },
      { what: 'the run to complete' },
    );
    expect(view.result).toMatchObject({ outcome: 'skipped', reasons: ['dependency crm-sync disabled'], traceId: view.traceId });
    expect(await cluster.state.get('lead-scorer')).toMatchObject({ skipped: 1, runs: 0 });
    expect(await cluster.redis.hgetall(skipCausesKey(cluster.keys, 'lead-scorer'))).toEqual({ 'crm-sync': '1' });

    await tracing.flush();
    const spans = receiver.spans().filter((s) => s.traceId === view.traceId);
    const run = spans.find((s) => s.name === 'run lead-scorer')!;
    expect(run.attributes).toMatchObject({ 'werkpilot.run.outcome': 'skipped', 'werkpilot.run.skip_reasons': ['dependency crm-sync disabled'] });
    expect(spans.find((s) => s.name === 'gate lead-scorer')).toMatchObject({
      parentSpanId: run.spanId,
      attributes: { 'werkpilot.gate.decision': 'skip', 'werkpilot.run.skip_reasons': ['dependency crm-sync disabled'] },
    });
    const trigger = spans.find((s) => s.name === 'trigger lead-scorer')!;
    expect(trigger.parentSpanId).toBe('');
    expect(spans.find((s) => s.name === 'add agents.lead-scorer')?.parentSpanId).toBe(trigger.spanId);
  });

  it('traces a tick dependent that parks until its dependency is done: the wait runs from the tick to the gate', async () => {
    const { tracing, receiver } = await traceTo('http/json');
    const cluster = await tracedCluster(
      tracing,
      [
        { name: 'extract', run: async () => new Promise((resolve) => setTimeout(resolve, 300)) },
        { name: 'load', dependsOn: ['extract'] },
      ],
      2,
    );
    const tick = Date.now();
    await cluster.queues.agents.addBulk(
      ['extract', 'load'].map((name) => ({ name, data: { agent: name, trigger: 'cron' as const }, opts: { jobId: `repeat:${name}:${tick}`, attempts: 1 } })),
    );
    await waitFor(async () => (await cluster.queues.agents.getJobState(`repeat:load:${tick}`)) === 'completed', { what: 'load to complete' });
    await tracing.flush();
    const runsOf = (agent: string) => receiver.spans().filter((s) => s.name === `run ${agent}`);
    const [parked, ran] = runsOf('load').sort((a, b) => a.startMs - b.startMs);
    expect(parked!.attributes['werkpilot.run.outcome']).toBe('waiting');
    expect(receiver.spans().find((s) => s.name === 'gate load' && s.parentSpanId === parked!.spanId)?.attributes['werkpilot.gate.decision']).toBe('wait');
    expect(ran!.attributes['werkpilot.run.outcome']).toBe('success');
    const wait = receiver.spans().find((s) => s.name === 'wait for dependencies load')!;
    expect(wait.traceId).toBe(ran!.traceId);
    expect(wait.startMs).toBe(tick);
    expect(wait.endMs).toBeGreaterThanOrEqual(runsOf('extract')[0]!.endMs - 1);
    expect(wait.endMs).toBeLessThanOrEqual(ran!.endMs);
  });
});
