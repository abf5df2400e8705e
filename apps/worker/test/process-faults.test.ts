import { afterAll, describe, expect, it } from 'vitest';
import { EventBus, createKeys, createLogger, createQueues, freePort, loadRegistry, runJobOptions, type BusEvent, type Queues } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();
const retention = { dlqRetain: 100, completedRetain: 1000 };
const once = { retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 100 } } };

const agentsDir = writeAgentsDir({
  // The run the careless neighbours must not take down.
  'steady.ts': agentSource({ name: 'steady', timeoutMs: 60_000, ...once }, 'await new Promise((r) => setTimeout(r, ctx.data.ms)); return { ok: true };'),
  // Common in real agent code: a promise started and never awaited, which rejects later.
  'careless.ts': agentSource({ name: 'careless', ...once }, "void Promise.reject(new Error('forgot to await this')); return { ok: true };"),
  // Throws outside any await while its run is still going: the worker's state is unknown.
  'thrower.ts': agentSource(
    { name: 'thrower', retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 100 } } },
    "setTimeout(() => { throw new Error('boom in a timer'); }, 50); await new Promise((r) => setTimeout(r, 10_000)); return { ok: true };",
  ),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

async function cluster() {
  const prefix = uniquePrefix();
  const keys = createKeys(prefix);
  const client = redis.client();
  const queues = createQueues({ connection: client, keys });
  const bus = new EventBus({ redis: client, keys, log: createLogger({ level: 'silent', name: 'test' }) });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  toClose.push(
    () => queues.close(),
    () => bus.close(),
  );
  const registry = await loadRegistry(agentsDir);
  const add = (agent: string, data: Record<string, unknown> = {}) => queues.agents.add(agent, { agent, trigger: 'manual', data }, runJobOptions(registry.require(agent), retention));
  const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, WORKER_CONCURRENCY: '5' };
  return { queues, events, add, env };
}

const activeOn = async (queues: Queues, id: string) => ((await queues.agents.getJobState(id)) === 'active' ? (await queues.agents.getJob(id))!.processedBy : undefined);

describe('an agent that leaves a promise rejection unawaited', () => {
  it('does not take down the 5 s run beside it: the worker logs, counts and publishes the rejection and keeps serving', async () => {
    const { queues, events, add, env } = await cluster();
    const port = await freePort();
    const worker = startApp('worker', { ...env, WORKER_HTTP_PORT: String(port) });
    await worker.waitForLog(/worker online/);

    const steady = await add('steady', { ms: 5000 });
    await waitFor(() => activeOn(queues, steady.id!), { what: 'the 5 s run active' });
    const careless = await add('careless');

    await waitFor(async () => (await queues.agents.getJobState(steady.id!)) === 'completed', { timeoutMs: 20_000, what: 'the 5 s run completed' });
    expect(worker.proc.exitCode).toBe(null);
    expect(await queues.agents.getJobState(careless.id!)).toBe('completed');
    expect(await queues.agents.getFailedCount()).toBe(0);
    expect(events.filter((e) => e.type === 'agent:dlq')).toEqual([]);
    const steadyDone = (await queues.agents.getJob(steady.id!))!;
    console.log(
      `[measure] careless neighbour: the 5 s run completed in ${(steadyDone.returnvalue as { durationMs: number }).durationMs} ms on attempt ${steadyDone.attemptsMade}; DLQ 0; worker alive`,
    );

    // Logged with the agent and run it came from.
    const line = worker.logs().find((l) => typeof l.msg === 'string' && l.msg.startsWith('unhandled promise rejection'))!;
    expect(line).toMatchObject({ agent: 'careless', runId: careless.id, activity: 'run', err: { message: 'forgot to await this' } });
    // Counted on the worker's /metrics, and published on the bus.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // Every series of a worker also names it (`worker="<id>"`, which Prometheus makes the instance).
    expect(metrics).toContain(`werkpilot_unhandled_rejections_total{agent="careless",worker="${String(worker.logs().find((l) => l.msg === 'worker online')?.workerId)}"} 1`);
    const event = await waitFor(() => events.find((e) => e.type === 'agent:unhandled-rejection'), { what: 'agent:unhandled-rejection' });
    expect(event).toMatchObject({ agent: 'careless', data: { runId: careless.id, error: 'forgot to await this', activity: 'run' } });

    // Still serving: a new run completes on the same worker.
    const after = await add('careless');
    await waitFor(async () => (await queues.agents.getJobState(after.id!)) === 'completed', { what: 'a run after the rejections' });
    worker.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  }, 60_000);
});

describe('an agent that throws outside any await', () => {
  it('fails its own run, returns the run beside it to the queue without an attempt, and exits 1 after a short grace', async () => {
    const { queues, add, env } = await cluster();
    const crashing = startApp('worker', { ...env, SHUTDOWN_GRACE_MS: '1000' });
    await crashing.waitForLog(/worker online/);

    const steady = await add('steady', { ms: 8000 });
    await waitFor(() => activeOn(queues, steady.id!), { what: 'the 8 s run active' });
    const thrower = await add('thrower');
    const queuedAt = Date.now();

    expect(await crashing.exited).toBe(1);
    console.log(`[measure] uncaught exception: worker exited 1 ${Date.now() - queuedAt} ms after the throwing run was queued (SHUTDOWN_GRACE_MS 1000)`);
    const fatal = crashing.logs().find((l) => l.level === 60)!;
    expect(fatal).toMatchObject({ agent: 'thrower', runId: thrower.id, err: { message: 'boom in a timer' } });
    expect(crashing.output()).toMatch(/shutdown complete in \d+ ms; exiting 1/);

    // The neighbour went back to the queue untouched; the thrower's run spent its first attempt.
    const returned = (await queues.agents.getJob(steady.id!))!;
    expect(['waiting', 'prioritized']).toContain(await returned.getState());
    expect(returned.attemptsMade).toBe(0);
    const failedOnce = (await queues.agents.getJob(thrower.id!))!;
    expect(failedOnce.attemptsMade).toBe(1);
    expect(failedOnce.failedReason).toMatch(/^uncaught exception: boom in a timer/);

    // The supervisor restarts the worker: the thrower's second (last) attempt crashes it too, and
    // ends in the DLQ instead of crash-looping the fleet; the neighbour is returned once more.
    const restarted = startApp('worker', env);
    expect(await restarted.exited).toBe(1);
    await waitFor(async () => (await queues.agents.getJobState(thrower.id!)) === 'failed', { what: 'the thrower dead-lettered' });
    expect((await queues.agents.getJob(thrower.id!))!.attemptsMade).toBe(2);

    // A worker without the careless neighbour's company completes it, on its first attempt.
    const last = startApp('worker', env);
    await waitFor(async () => (await queues.agents.getJobState(steady.id!)) === 'completed', { timeoutMs: 30_000, what: 'the returned run completed' });
    const completed = (await queues.agents.getJob(steady.id!))!;
    expect(completed.attemptsMade).toBe(1);
    expect(completed.stalledCounter).toBe(0);
    last.kill('SIGTERM');
    expect(await last.exited).toBe(0);
  }, 90_000);
});

/**
 * `times` workers in turn take the run and are SIGKILLed while it is active on them: the first
 * takes the new run, each later one recovers it from the one before (a stall each time).
 */
async function killWorkersRunning(queues: Queues, runId: string, env: Record<string, string>, times: number): Promise<void> {
  for (let kill = 1; kill <= times; kill++) {
    const victim = startApp('worker', env);
    await victim.waitForLog(/worker online/);
    const victimId = victim.logs().find((l) => l.msg === 'worker online')!.workerId;
    await waitFor(async () => (await activeOn(queues, runId)) === victimId, { timeoutMs: 20_000, what: `the run active on victim ${kill}` });
    victim.kill('SIGKILL');
    expect(await victim.exited).toBe('SIGKILL');
  }
}

describe('a run whose worker is killed', () => {
  it('is recovered both times and completes: two stalls do not dead-letter it (MAX_STALLED_COUNT 2)', async () => {
    const { queues, events, add, env } = await cluster();
    // Short enough to recover within seconds, long enough that a loaded machine's survivor keeps its lock through the 4 s run.
    const fast = { ...env, LOCK_DURATION_MS: '3000', STALLED_INTERVAL_MS: '1500' };
    const steady = await add('steady', { ms: 4000 });
    await killWorkersRunning(queues, steady.id!, fast, 2);
    const survivor = startApp('worker', fast);
    await waitFor(async () => (await queues.agents.getJobState(steady.id!)) === 'completed', { timeoutMs: 30_000, what: 'the run completed after two stalls' });
    const done = (await queues.agents.getJob(steady.id!))!;
    expect(done.attemptsMade).toBe(1);
    expect(done.stalledCounter).toBe(2);
    expect(events.filter((e) => e.type === 'agent:dlq')).toEqual([]);
    survivor.kill('SIGTERM');
    expect(await survivor.exited).toBe(0);
  }, 90_000);
  it('is dead-lettered on its third stall, and its agent runs again at once: the overlap lease it held is released', async () => {
    const { queues, events, add, env } = await cluster();
    const fast = { ...env, LOCK_DURATION_MS: '3000', STALLED_INTERVAL_MS: '1500' };
    const steady = await add('steady', { ms: 20_000 });
    await killWorkersRunning(queues, steady.id!, fast, 3);
    const survivor = startApp('worker', fast);
    await waitFor(async () => (await queues.agents.getJobState(steady.id!)) === 'failed', { timeoutMs: 30_000, what: 'the run dead-lettered on its third stall' });
    expect((await queues.agents.getJob(steady.id!))!.failedReason).toMatch(/stalled more than allowable limit/);
    await waitFor(() => events.some((e) => e.type === 'agent:dlq' && e.data.runId === steady.id), { what: 'agent:dlq of the run' });
    // Its lease lives for the agent's timeout + LOCK_DURATION_MS + 30 s unless released: the next run must not wait for that.
    const next = await add('steady', { ms: 10 });
    await waitFor(async () => (await queues.agents.getJobState(next.id!)) === 'completed', { timeoutMs: 15_000, what: 'the next run of the agent completed' });
    expect((await queues.agents.getJob(next.id!))!.returnvalue).toMatchObject({ outcome: 'success' });
    survivor.kill('SIGTERM');
    expect(await survivor.exited).toBe(0);
  }, 120_000);
});
