import { afterEach, describe, expect, it } from 'vitest';
import {
  CircuitBreaker,
  DeadLetterQueue,
  EventBus,
  createKeys,
  createLogger,
  cancelRun,
  createRunAdmission,
  startRunCancelListener,
  type RunPhase,
  dependencyHealthRule,
  triggerRun,
  type AgentDefinition,
  type BusEvent,
} from '@werkpilot/shared';
import { createAgentCluster, sleep, uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const HOUR = 60 * 60 * 1000;
const spec = { name: 'crm-sync', maxRestartsPerHour: 50, timeoutMs: 1000, retry: { attempts: 1, backoff: { type: 'exponential' as const, delayMs: 10 } } };

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A settable clock shared by every breaker of a test. */
function testClock(start = Date.UTC(2026, 0, 5, 12)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

/** Two breakers on their own connections (two workers), plus the events the bus saw. */
async function twoWorkers(options: { cooldownMs?: number } = {}) {
  const keys = createKeys(uniquePrefix());
  const clock = testClock();
  const make = () => new CircuitBreaker({ redis: redis.client(), keys, clock: clock.now, ...options });
  const bus = new EventBus({ redis: redis.client(), keys, log });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  cleanups.push(() => bus.close());
  /** Resolves once every event published before it has arrived (the bus keeps order), so a count read then is final. */
  const flush = async () => {
    const marker = `marker:${events.length}:${Math.random()}`;
    await bus.publish(marker);
    await waitFor(() => events.some((e) => e.type === marker), { what: 'the marker event' });
  };
  return { keys, clock, a: make(), b: make(), events, flush };
}

const failure = (runId: string) => ({ agent: spec.name, runId, outcome: 'failure' as const, at: 0, error: 'boom' });

async function openCircuit(a: CircuitBreaker, b: CircuitBreaker) {
  await Promise.all(Array.from({ length: 51 }, (_, i) => (i % 2 ? a : b).record(failure(`r${i}`), spec.maxRestartsPerHour)));
}

describe('circuit breaker', () => {
  it('opens after 51 restarts within the hour from two workers, announcing it once with the count', async () => {
    const { a, b, events, flush } = await twoWorkers();
    await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).record(failure(`r${i}`), 50)));
    expect((await a.get(spec.name)).state).toBe('closed');
    expect((await a.get(spec.name)).restartsLastHour).toBe(50);

    await b.record(failure('r50'), 50);
    const status = await a.get(spec.name);
    expect(status.state).toBe('open');
    expect(status.restartsLastHour).toBe(51);
    expect(await a.admit(spec, 'next')).toBe('open');
    await b.record(failure('r51'), 50);
    // A second announcement would have arrived before the marker.
    await flush();
    const opened = events.filter((e) => e.type === 'circuit:opened');
    expect(opened).toHaveLength(1);
    expect(opened[0]).toMatchObject({ agent: spec.name, data: { count: 51, maxRestartsPerHour: 50 } });
  });

  it('does not count restarts older than the rolling hour', async () => {
    const { a, b, clock } = await twoWorkers();
    await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).record(failure(`r${i}`), 50)));
    clock.advance(HOUR + 1);
    await a.record(failure('late'), 50);
    expect(await a.get(spec.name)).toMatchObject({ state: 'closed', restartsLastHour: 1 });
  });

  it('lets exactly one trial run through when half-open, however many workers ask at once', async () => {
    const { a, b, clock } = await twoWorkers();
    await openCircuit(a, b);
    clock.advance(HOUR + 1); // the window has dropped under the limit: the cooldown is over
    const decisions = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).admit(spec, `run-${i}`)));
    expect(decisions.filter((d) => d === 'trial')).toHaveLength(1);
    expect(decisions.filter((d) => d === 'busy')).toHaveLength(39);
    const status = await a.get(spec.name);
    expect(status.state).toBe('half-open');
    expect(status.trialRunId).toBe(`run-${decisions.indexOf('trial')}`);
    // The trial run itself, redelivered (a stalled job), is still the trial.
    expect(await b.admit(spec, status.trialRunId!)).toBe('trial');
  });

  it('closes when the trial run succeeds, and only the trial run can close it', async () => {
    const { a, b, clock, events } = await twoWorkers();
    await openCircuit(a, b);
    clock.advance(HOUR + 1);
    expect(await a.admit(spec, 'trial-run')).toBe('trial');
    await b.record({ agent: spec.name, runId: 'some-older-run', outcome: 'success', at: 0 }, 50);
    expect((await a.get(spec.name)).state).toBe('half-open');

    await b.record({ agent: spec.name, runId: 'trial-run', outcome: 'success', at: 0 }, 50);
    expect((await a.get(spec.name)).state).toBe('closed');
    expect(await a.admit(spec, 'after')).toBe('closed');
    await waitFor(() => events.some((e) => e.type === 'circuit:closed'));
    expect(events.find((e) => e.type === 'circuit:closed')).toMatchObject({ agent: spec.name, data: { reason: 'trial run succeeded', runId: 'trial-run' } });
  });

  it('reopens when the trial run fails, for another cooldown', async () => {
    const { a, b, clock, events } = await twoWorkers({ cooldownMs: 60_000 });
    await openCircuit(a, b);
    expect(await a.admit(spec, 'early')).toBe('open');
    clock.advance(60_000);
    expect(await a.admit(spec, 'trial-run')).toBe('trial');
    await b.record(failure('trial-run'), 50);
    expect((await a.get(spec.name)).state).toBe('open');
    expect(await a.admit(spec, 'right-after')).toBe('open');
    await waitFor(() => events.filter((e) => e.type === 'circuit:opened').length === 2);
    expect(events.filter((e) => e.type === 'circuit:opened')[1]).toMatchObject({ data: { reason: 'trial run failed', count: 52 } });
    clock.advance(60_000);
    expect(await b.admit(spec, 'second-trial')).toBe('trial');
  });

  it('hands the trial back when another rule skipped the trial run', async () => {
    const { a, b, clock } = await twoWorkers();
    await openCircuit(a, b);
    clock.advance(HOUR + 1);
    expect(await a.admit(spec, 'trial-run')).toBe('trial');
    await a.record({ agent: spec.name, runId: 'trial-run', outcome: 'skipped', at: 0, error: 'dependency inbox disabled' }, 50);
    expect((await a.get(spec.name)).state).toBe('open');
    expect(await b.admit(spec, 'another')).toBe('trial');
  });

  it('closes on a manual reset and forgets the hour', async () => {
    const { a, b, events, flush } = await twoWorkers();
    await openCircuit(a, b);
    expect(await a.reset(spec.name)).toBe('open');
    expect(await b.get(spec.name)).toMatchObject({ state: 'closed', restartsLastHour: 0, openedAt: null });
    expect(await b.admit(spec, 'x')).toBe('closed');
    await waitFor(() => events.some((e) => e.type === 'circuit:closed'));
    expect(events.find((e) => e.type === 'circuit:closed')).toMatchObject({ data: { reason: 'manual reset', previous: 'open' } });
    expect(await a.reset(spec.name)).toBe('closed'); // idempotent, and no second event
    await b.record(failure('after-reset'), 50);
    expect((await b.get(spec.name)).restartsLastHour).toBe(1);
    await flush();
    expect(events.filter((e) => e.type === 'circuit:closed')).toHaveLength(1);
  });
});

describe('circuit breaker in the executor', () => {
  async function cluster(agents: Partial<AgentDefinition>[], { cooldownMs }: { cooldownMs?: number } = {}) {
    const c = await createAgentCluster(redis, agents, { log });
    cleanups.push(() => c.close());
    const { keys, queues, events, registry } = c;
    const circuit = new CircuitBreaker({ redis: c.redis, keys, log, ...(cooldownMs !== undefined ? { cooldownMs } : {}) });
    /** A worker with the breaker's rules and a cancel listener, as a worker process wires them. */
    const startWorker = async (id: string) => {
      const runPhases = new Map<string, RunPhase>();
      const worker = await c.startWorker({
        id,
        concurrency: 4,
        wire: (own) => ({
          admission: createRunAdmission({ redis: own, keys, log, rules: [dependencyHealthRule()], circuit: circuit.settings }),
          circuit: circuit.settings,
          runPhases,
        }),
      });
      const listener = await startRunCancelListener({ redis: redis.client(), keys, log, worker, workerId: id, phaseOf: (runId) => runPhases.get(runId) });
      cleanups.push(() => listener.close());
    };
    const run = async (agent: string) => {
      const { runId } = await triggerRun({ queue: queues.agents, registry, retention: { dlqRetain: 100, completedRetain: 1000 } }, agent);
      const job = await waitFor(
        async () => {
          const j = await queues.agents.getJob(runId);
          return j && (j.finishedOn !== undefined && (j.returnvalue !== null || j.failedReason) ? j : null);
        },
        { what: `run ${runId} of ${agent} to finish` },
      );
      return job;
    };
    const cancel = (runId: string) => cancelRun({ queue: queues.agents, redis: c.redis, keys, bus: c.bus, registry }, runId, 'operator said stop');
    return { keys, queues, events, registry, circuit, startWorker, run, cancel };
  }

  it('skips the agent and its dependents while its circuit is open, and runs them again after a reset', async () => {
    const c = await cluster([
      {
        name: 'flaky',
        maxRestartsPerHour: 3,
        retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 10 } },
        run: async () => {
          throw new Error('503');
        },
      },
      { name: 'dependent', dependsOn: ['flaky'] },
    ]);
    await c.startWorker('w1');
    await c.startWorker('w2');
    await c.run('flaky'); // 2 restarts (a retry and the failed run)
    await c.run('flaky'); // 4 > 3: open
    expect((await c.circuit.get('flaky')).state).toBe('open');
    await waitFor(() => c.events.some((e) => e.type === 'circuit:opened'));

    const skippedOwn = await c.run('flaky');
    expect(skippedOwn.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['circuit open'] });
    const skippedDependent = await c.run('dependent');
    expect(skippedDependent.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['dependency flaky unhealthy: circuit open'] });
    await waitFor(() => c.events.some((e) => e.type === 'dependency:unhealthy' && e.agent === 'dependent'));

    await c.circuit.reset('flaky');
    // flaky's last runs are dead letters, which skip its lone dependents by themselves (gating.test.ts) until they leave the DLQ.
    await new DeadLetterQueue(c.queues.agents).purge();
    const ran = await c.run('dependent');
    expect(ran.returnvalue).toMatchObject({ outcome: 'success' });
  });

  it('hands the half-open trial back when the trial run is cancelled, so the next run after the cooldown is the trial', async () => {
    let mode: 'fail' | 'hang' | 'succeed' = 'fail';
    const c = await cluster(
      [
        {
          name: 'flaky',
          maxRestartsPerHour: 1,
          retry: { attempts: 1 },
          run: async (ctx) => {
            if (mode === 'fail') throw new Error('503');
            if (mode === 'hang') await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
            return 'ok';
          },
        },
      ],
      { cooldownMs: 200 },
    );
    await c.startWorker('w1');
    await c.run('flaky');
    await c.run('flaky'); // 2 > 1: open
    expect((await c.circuit.get('flaky')).state).toBe('open');

    mode = 'hang';
    await sleep(250);
    const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention: { dlqRetain: 100, completedRetain: 1000 } }, 'flaky');
    await waitFor(async () => (await c.circuit.get('flaky')).trialRunId === runId, { what: 'the run to hold the trial' });
    await expect(c.cancel(runId)).resolves.toMatchObject({ outcome: 'aborting' });
    await waitFor(async () => (await c.queues.agents.getJobState(runId)) === 'completed', { what: 'the trial run to end' });
    expect((await c.queues.agents.getJob(runId))!.returnvalue).toMatchObject({ outcome: 'cancelled' });
    expect(await c.circuit.get('flaky')).toMatchObject({ state: 'open', trialRunId: null });

    mode = 'succeed';
    await sleep(250);
    const next = await c.run('flaky');
    expect(next.returnvalue).toMatchObject({ outcome: 'success' });
    expect((await c.circuit.get('flaky')).state).toBe('closed');
  });
});
