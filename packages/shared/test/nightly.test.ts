import { afterEach, describe, expect, it } from 'vitest';
import { Queue, QueueEvents, Worker } from 'bullmq';
import {
  AgentStateStore,
  CircuitBreaker,
  EventBus,
  ReportStore,
  buildRegistry,
  createKeys,
  createLogger,
  createNightlyHandler,
  createQueues,
  createSystemWorker,
  registerNightlySchedule,
  runNightly,
  skipCausesKey,
  skipCausesOf,
  splitSkipReasons,
  triggerNightly,
  type AgentDefinition,
  type BusEvent,
  type Keys,
  type NightlyDeps,
  type RunRecord,
} from '@werkpilot/shared';
import { uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const DAY = 24 * 60 * 60 * 1000;
// 22:00 UTC = 23:00 in Zurich (CET) on 2026-01-05.
const NIGHT = Date.UTC(2026, 0, 5, 22);

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function setup(agents: Partial<AgentDefinition>[]) {
  const keys: Keys = createKeys(uniquePrefix());
  const client = redis.client();
  const registry = buildRegistry(agents.map((a) => ({ definition: { run: async () => null, ...a }, source: `/t/${a.name}.ts` })));
  const state = new AgentStateStore({ redis: client, keys });
  const circuit = new CircuitBreaker({ redis: client, keys });
  const bus = new EventBus({ redis: client, keys, log });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  cleanups.push(() => bus.close());
  let now = NIGHT;
  const deps: NightlyDeps = { redis: client, keys, registry, state, circuit, bus, log, timezone: 'Europe/Zurich', completedRetain: 1000, clock: () => now };
  /** Records runs as a worker would: state, skip causes and circuit. */
  const record = async (agent: string, outcome: RunRecord['outcome'], count: number, extra: Partial<RunRecord> = {}) => {
    for (let i = 0; i < count; i++) {
      const run: RunRecord = { agent, outcome, at: now, ...(outcome === 'skipped' ? {} : { durationMs: 100 }), ...extra };
      const pipeline = client.pipeline();
      state.addRecordTo(pipeline, run);
      // The run's completion counts a skipped run's causes (run-completion.ts).
      if (run.outcome === 'skipped') for (const dependency of skipCausesOf(splitSkipReasons(run.error ?? ''))) pipeline.hincrby(skipCausesKey(keys, agent), dependency, 1);
      await pipeline.exec();
      await circuit.record(run, registry.require(agent).maxRestartsPerHour);
    }
  };
  return { keys, client, registry, deps, events, record, setNow: (t: number) => (now = t) };
}

describe('nightly optimisation', () => {
  it('reports each agent with its figures and tuning advice, triggered as a system job', async () => {
    const c = await setup([
      { name: 'fine', timeoutMs: 10_000 },
      { name: 'slow', timeoutMs: 1000 },
      { name: 'failing', timeoutMs: 10_000 },
      { name: 'dependent', dependsOn: ['failing', 'fine'] },
      { name: 'idle' },
    ]);
    await c.record('fine', 'success', 20);
    await c.record('slow', 'success', 97, { durationMs: 200 });
    await c.record('slow', 'failure', 3, { durationMs: 1004, error: 'timeout after 1000 ms' });
    await c.record('failing', 'failure', 8, { error: '503' });
    await c.record('failing', 'success', 2);
    await c.record('dependent', 'skipped', 4, { error: 'dependency failing unhealthy: circuit open' });
    await c.record('dependent', 'skipped', 1, { error: 'dependency fine disabled; dependency failing unhealthy: circuit open' });
    await c.record('dependent', 'skipped', 2, { error: 'overlap' });

    // Driven the way the schedule drives it: a `nightly` job on the system queue, run by a worker.
    const queues = createQueues({ connection: c.client, keys: c.keys });
    const worker = createSystemWorker({ connection: redis.client(), keys: c.keys, log, workerId: 'w1', handlers: { nightly: createNightlyHandler(c.deps) } });
    const queueEvents = new QueueEvents('system', { connection: c.client, prefix: c.keys.bullPrefix });
    cleanups.push(
      () => queues.close(),
      () => worker.close(),
      () => queueEvents.close(),
    );
    await queueEvents.waitUntilReady();
    const jobId = await triggerNightly(queues.system);
    const job = (await queues.system.getJob(jobId))!;
    expect(await job.waitUntilFinished(queueEvents, 20_000)).toMatchObject({ id: '2026-01-05', saved: true, flagged: ['failing'] });

    const report = (await new ReportStore({ redis: c.client, keys: c.keys }).getLatest())!;
    expect(report).toMatchObject({ id: '2026-01-05', timezone: 'Europe/Zurich', since: null, flagged: ['failing'] });
    expect(report.agents.fine).toMatchObject({ runs: 20, failures: 0, failureRate: 0, score: 100, flagged: false, advice: [], restarts: 0 });
    expect(report.agents.slow).toMatchObject({ runs: 100, failures: 3, failureRate: 0.03, p50: 200, p95: 200, p99: 1004, suggestedTimeoutMs: 2008, restarts: 3 });
    expect(report.agents.slow!.advice).toEqual(['timeoutMs 1000 is not above p99 1004 ms: raise it to 2008 (2 × p99)']);
    // 0.6·0.2 + 0.25·(1 − 100/10000) + 0.15·(1 − 8/50) = 0.12 + 0.2475 + 0.126 = 0.4935
    expect(report.agents.failing).toMatchObject({ runs: 10, failures: 8, failureRate: 0.8, score: 49, flagged: true, restarts: 8, restartsLastHour: 8 });
    expect(report.agents.failing!.advice).toEqual(['score 49 is under 50: flagged for attention']);
    expect(report.agents.dependent).toMatchObject({ runs: 0, skipped: 7, score: null, failureRate: null, topSkipCause: { dependency: 'failing', skips: 5 } });
    expect(report.agents.dependent!.advice).toEqual(['dependency failing caused most skips (5)']);
    expect(report.agents.idle).toMatchObject({ runs: 0, score: null, p99: null, advice: [] });

    await waitFor(() => c.events.some((e) => e.type === 'nightly:report'));
    expect(c.events.find((e) => e.type === 'nightly:report')!.data).toMatchObject({ id: '2026-01-05', flagged: ['failing'] });
  });

  it("reports the period since the previous night's report", async () => {
    const c = await setup([{ name: 'a', dependsOn: ['b'] }, { name: 'b' }]);
    await c.record('a', 'success', 10);
    await c.record('a', 'skipped', 2, { error: 'dependency b unhealthy: circuit open' });
    await runNightly(c.deps);
    c.setNow(NIGHT + DAY);
    await c.record('a', 'success', 3);
    await c.record('a', 'failure', 1);
    const { report } = await runNightly(c.deps);
    expect(report.id).toBe('2026-01-06');
    expect(report.since).toBe(new Date(NIGHT).toISOString());
    expect(report.agents.a).toMatchObject({ runs: 4, failures: 1, failureRate: 0.25, skipped: 0, restarts: 1, topSkipCause: null });
  });

  it('keeps reports 30 days', async () => {
    const c = await setup([{ name: 'a' }]);
    for (const day of [0, 10, 20, 29, 30]) {
      c.setNow(NIGHT + day * DAY);
      expect((await runNightly(c.deps)).saved).toBe(true);
    }
    expect((await new ReportStore({ redis: c.client, keys: c.keys }).list()).map((r) => r.id)).toEqual(['2026-02-04', '2026-02-03', '2026-01-25', '2026-01-15', '2026-01-05']);
    c.setNow(NIGHT + 31 * DAY);
    await runNightly(c.deps);
    const ids = (await new ReportStore({ redis: c.client, keys: c.keys }).list()).map((r) => r.id);
    expect(ids).toEqual(['2026-02-05', '2026-02-04', '2026-02-03', '2026-01-25', '2026-01-15']);
    expect(await new ReportStore({ redis: c.client, keys: c.keys }).get('2026-01-05')).toBeNull();
  });

  it('writes one report per night with two schedulers registering the schedule and duplicate jobs racing', async () => {
    const c = await setup([{ name: 'a' }]);
    // Two scheduler replicas, each with its own connection, register the nightly schedule.
    const schedulerQueues = [createQueues({ connection: redis.client(), keys: c.keys }), createQueues({ connection: redis.client(), keys: c.keys })];
    cleanups.push(...schedulerQueues.map((q) => () => q.close()));
    await Promise.all(schedulerQueues.map((q) => registerNightlySchedule(q.system, { cron: '0 23 * * *', tz: 'Europe/Zurich' })));
    await registerNightlySchedule(schedulerQueues[0]!.system, { cron: '0 23 * * *', tz: 'Europe/Zurich' });
    const schedulers = await schedulerQueues[1]!.system.getJobSchedulers(0, -1);
    expect(schedulers.map((s) => [s.key, s.pattern, s.tz])).toEqual([['nightly', '0 23 * * *', 'Europe/Zurich']]);

    // Even if two nightly jobs ran for the same night on two workers, one report and one event.
    const outcomes = await Promise.all([runNightly(c.deps), runNightly({ ...c.deps, redis: redis.client() })]);
    expect(outcomes.filter((o) => o.saved)).toHaveLength(1);
    expect(outcomes[0]!.report.generatedAt).toBe(outcomes[1]!.report.generatedAt);
    await c.deps.bus.publish('marker');
    await waitFor(() => c.events.some((e) => e.type === 'marker'));
    expect(c.events.filter((e) => e.type === 'nightly:report')).toHaveLength(1);
    expect(await new ReportStore({ redis: c.client, keys: c.keys }).list()).toHaveLength(1);
  });

  it('trims completed jobs past retention', async () => {
    const c = await setup([{ name: 'a' }]);
    const queue = new Queue('agents', { connection: c.client, prefix: c.keys.bullPrefix });
    const worker = new Worker('agents', async () => null, { connection: redis.client(), prefix: c.keys.bullPrefix });
    cleanups.push(
      () => queue.close(),
      () => worker.close(),
    );
    await queue.addBulk(Array.from({ length: 5 }, () => ({ name: 'a', data: {} })));
    await waitFor(async () => (await queue.getCompletedCount()) === 5);
    const { report } = await runNightly({ ...c.deps, completedRetain: 2 });
    expect(report.trimmed.completedJobs).toBe(3);
    expect(await queue.getCompletedCount()).toBe(2);
  });
});
