import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgentStateStore,
  DeadLetterQueue,
  EventBus,
  InvalidInputError,
  OverlapGuard,
  RunFinishedError,
  RunNotFoundError,
  cancelRun,
  createKeys,
  createLogger,
  createQueues,
  getPipeline,
  loadRegistry,
  runJobOptions,
  slotGroupOf,
  triggerRun,
  type BusEvent,
  type CancelRunDeps,
  type Queues,
  type Registry,
} from '@werkpilot/shared';
import { startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-cancel-'));
const runLog = path.join(scratch, 'runs.txt');

// `long` runs until its signal aborts, then writes down why (in whichever worker process ran it).
// `flaky-root` fails its first attempt and would retry after 30 s; `child` depends on it.
// `serial` queues its runs (overlap 'queue') and takes 1.5 s each.
const agentsDir = writeAgentsDir({
  'long.ts': `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'long',
  timeoutMs: 60000,
  retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 100 } },
  async run(ctx) {
    appendFileSync(process.env.RUN_LOG, 'started ' + ctx.runId + ' ' + process.pid + '\\n');
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    appendFileSync(process.env.RUN_LOG, 'aborted ' + ctx.runId + ' ' + ctx.signal.reason.message + '\\n');
    return 'finished anyway';
  },
});
`,
  'flaky-root.ts': `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'flaky-root',
  retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 30000 } },
  async run(ctx) {
    appendFileSync(process.env.RUN_LOG, 'started ' + ctx.runId + ' attempt ' + ctx.attempt + '\\n');
    if (ctx.attempt === 1) throw new Error('upstream 503');
    return 'ok';
  },
});
`,
  'child.ts': `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'child',
  dependsOn: ['flaky-root'],
  async run(ctx) { appendFileSync(process.env.RUN_LOG, 'started ' + ctx.runId + '\\n'); return 'ok'; },
});
`,
  'serial.ts': `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'serial',
  overlap: 'queue',
  async run(ctx) {
    appendFileSync(process.env.RUN_LOG, 'started ' + ctx.runId + ' ' + Date.now() + '\\n');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    appendFileSync(process.env.RUN_LOG, 'ended ' + ctx.runId + ' ' + Date.now() + '\\n');
    return 'ok';
  },
});
`,
});

const prefix = uniquePrefix();
const keys = createKeys(prefix);
let workers: AppProcess[] = [];
let queues: Queues;
let registry: Registry;
let deps: CancelRunDeps;
const events: BusEvent[] = [];

beforeAll(async () => {
  const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, RUN_LOG: runLog, WORKER_CONCURRENCY: '4' };
  workers = [startApp('worker', env), startApp('worker', env)];
  registry = await loadRegistry(agentsDir);
  const connection = redis.client();
  queues = createQueues({ connection, keys });
  const bus = new EventBus({ redis: connection, keys, log });
  await bus.subscribe((e) => events.push(e));
  deps = { queue: queues.agents, redis: connection, keys, bus, registry, ackTimeoutMs: 10_000 };
  await Promise.all(workers.map((w) => w.waitForLog(/worker online/, 45_000)));
}, 60_000);

afterAll(async () => {
  await stopApps(workers);
  await queues?.close();
  rmSync(scratch, { recursive: true, force: true });
}, 60_000);

const lines = () => {
  try {
    return readFileSync(runLog, 'utf8').trim().split('\n');
  } catch {
    return [];
  }
};
const eventsOf = (runId: string) => events.filter((e) => e.data.runId === runId);

describe('cancelling runs', () => {
  it('aborts a running run on the worker that runs it: one outcome, cancelled — not a failure, not a dead letter', async () => {
    const { runId } = await triggerRun({ queue: queues.agents, registry, retention }, 'long');
    const started = await waitFor(() => lines().find((l) => l.startsWith(`started ${runId} `)), { timeoutMs: 20_000, what: 'the run to start' });
    const runnerPid = Number(started.split(' ')[2]);

    const result = await cancelRun(deps, runId, 'operator said stop');
    expect(result).toMatchObject({ runId, agent: 'long', outcome: 'aborting', state: 'running' });
    if (result.outcome === 'aborting') expect(result.workerId).toContain(`:${runnerPid}:`);

    await waitFor(async () => (await queues.agents.getJobState(runId)) === 'completed', { timeoutMs: 20_000, what: 'the run to end' });
    const job = (await queues.agents.getJob(runId))!;
    expect(job.returnvalue).toMatchObject({ outcome: 'cancelled', reason: 'operator said stop', state: 'running' });
    expect(job.attemptsMade).toBe(1);
    expect(lines()).toContain(`aborted ${runId} cancelled: operator said stop`);
    await waitFor(() => eventsOf(runId).some((e) => e.type === 'agent:cancelled'));
    expect(eventsOf(runId).find((e) => e.type === 'agent:cancelled')).toMatchObject({ agent: 'long', data: { reason: 'operator said stop', attempt: 1, state: 'running' } });
    // One outcome: no failure, retry or dead letter beside it; nothing for the DLQ, its alerts or retry-all.
    expect(eventsOf(runId).map((e) => e.type)).toEqual(['agent:started', 'agent:cancelled']);
    const dlq = new DeadLetterQueue(queues.agents);
    expect(await dlq.size()).toBe(0);
    expect(await dlq.retryAll()).toBe(0);
    expect(await new AgentStateStore({ redis: redis.client(), keys }).get('long')).toMatchObject({ cancelled: 1, failures: 0, runs: 0 });
    expect(lines().filter((l) => l.startsWith(`started ${runId} `))).toHaveLength(1);

    await expect(cancelRun(deps, runId, 'again')).rejects.toThrow(RunFinishedError);
    await expect(cancelRun(deps, runId, 'again')).rejects.toThrow(`run ${runId} already completed; only a queued or running run can be cancelled`);
  }, 60_000);

  it('cancels a queued run and a delayed run before any worker takes them, saying so', async () => {
    await queues.agents.pause();
    try {
      const { runId: queuedId } = await triggerRun({ queue: queues.agents, registry, retention }, 'long');
      const delayed = await queues.agents.add('long', { agent: 'long', trigger: 'manual' }, { ...runJobOptions(registry.require('long'), retention), delay: 60_000 });

      await expect(cancelRun(deps, queuedId, 'not needed')).resolves.toEqual({ runId: queuedId, agent: 'long', outcome: 'cancelled', state: 'queued' });
      await expect(cancelRun(deps, delayed.id!, 'not needed')).resolves.toMatchObject({ outcome: 'cancelled', state: 'delayed' });
      expect(await queues.agents.getJob(queuedId)).toBeUndefined();
      expect(await queues.agents.getJob(delayed.id!)).toBeUndefined();
      await waitFor(() => events.filter((e) => e.type === 'agent:cancelled' && [queuedId, delayed.id].includes(e.data.runId as string)).length === 2);
      expect(eventsOf(queuedId).find((e) => e.type === 'agent:cancelled')).toMatchObject({ agent: 'long', data: { reason: 'not needed', state: 'queued' } });
    } finally {
      await queues.agents.resume();
    }
    expect(lines().some((l) => l.includes('not needed'))).toBe(false);
  });

  it('skips the dependent of a pipeline root cancelled in its retry backoff within a second, never running it', async () => {
    const pipelineDeps = { queue: queues.agents, registry, retention, redis: redis.client(), keys };
    const { runId, pipelineId } = await triggerRun(pipelineDeps, 'flaky-root', { withDependents: true });
    // Its first attempt fails; the retry waits 30 s in the delayed set, the dependent parked behind it.
    await waitFor(async () => (await queues.agents.getJobState(runId)) === 'delayed' && (await queues.agents.getJob(runId))!.attemptsMade === 1, {
      timeoutMs: 20_000,
      what: 'the root in its retry backoff',
    });

    const cancelledAt = Date.now();
    await expect(cancelRun(deps, runId, 'CRM migration')).resolves.toMatchObject({ outcome: 'cancelled', state: 'delayed' });
    const childId = (await getPipeline(pipelineDeps, pipelineId!)).runs[1]!.runId;
    const child = await waitFor(async () => ((await queues.agents.getJobState(childId)) === 'completed' ? queues.agents.getJob(childId) : undefined), {
      timeoutMs: 5_000,
      intervalMs: 20,
      what: 'the dependent to end',
    });
    const skippedAfterMs = child!.finishedOn! - cancelledAt;
    console.log(`[measure] cancel of a delayed pipeline root -> dependent skipped after ${skippedAfterMs} ms`);
    expect(skippedAfterMs).toBeLessThan(1000);
    expect(child!.returnvalue).toMatchObject({ outcome: 'skipped', reasons: ['dependency flaky-root cancelled'] });
    expect(lines().some((l) => l.startsWith(`started ${childId}`))).toBe(false);
    await waitFor(() => eventsOf(runId).some((e) => e.type === 'agent:cancelled'));
    expect(eventsOf(runId).find((e) => e.type === 'agent:cancelled')).toMatchObject({ data: { state: 'delayed', reason: 'CRM migration' } });
    expect(eventsOf(runId).some((e) => e.type === 'agent:dlq')).toBe(false);
  }, 60_000);

  it("cancels a parked 'queue' run: it leaves the waiters, and the next one starts as soon as the running one ends", async () => {
    const trigger = () => triggerRun({ queue: queues.agents, registry, retention }, 'serial');
    const first = await trigger();
    await waitFor(() => lines().some((l) => l.startsWith(`started ${first.runId} `)), { timeoutMs: 20_000, what: 'the first run to start' });
    const second = await trigger();
    const third = await trigger();
    // Parked = delayed and registered as a waiter, in either order (two workers park them at once;
    // a cancel between the two calls of parking is the next test's).
    const waiters = slotGroupOf(keys, registry.require('serial')).waiters;
    await waitFor(async () => (await deps.redis.lrange(waiters, 0, -1)).sort().join() === [second.runId, third.runId].sort().join(), { what: 'both queued runs parked' });

    await expect(cancelRun(deps, second.runId, 'superseded')).resolves.toMatchObject({ outcome: 'cancelled', state: 'parked' });
    const ended = await waitFor(() => lines().find((l) => l.startsWith(`ended ${first.runId} `)), { timeoutMs: 20_000, what: 'the first run to end' });
    const started = await waitFor(() => lines().find((l) => l.startsWith(`started ${third.runId} `)), { timeoutMs: 20_000, what: 'the third run to start' });
    // Handed the lease straight away: without the cancel's clean-up it would wait for its safety deadline (up to a minute).
    expect(Number(started.split(' ')[2]) - Number(ended.split(' ')[2])).toBeLessThan(1000);
    expect(lines().some((l) => l.startsWith(`started ${second.runId} `))).toBe(false);
  }, 60_000);

  it('leaves no waiter behind when a run is cancelled between being delayed and registering as a waiter', async () => {
    // The worker parks in two calls (BullMQ's moveToDelayed, then the registration); a cancel can
    // land between them. Here the job is delayed by hand and cancelled before it registers.
    const spec = registry.require('serial');
    const job = await queues.agents.add('serial', { agent: 'serial', trigger: 'manual', data: {} }, { ...runJobOptions(spec, retention), delay: 60_000 });
    await expect(cancelRun(deps, job.id!, 'superseded')).resolves.toMatchObject({ outcome: 'cancelled', state: 'delayed' });
    const group = slotGroupOf(keys, spec);
    const registered = await new OverlapGuard({ redis: deps.redis, keys }).registerParked(group, job.id!, 3, false);
    expect(registered).toBe('gone');
    expect(await deps.redis.lrange(group.waiters, 0, -1)).toEqual([]);
  });

  it('refuses an unknown run or a bad reason with a clear error', async () => {
    await expect(cancelRun(deps, 'no-such-run', 'why not')).rejects.toThrow(RunNotFoundError);
    await expect(cancelRun(deps, 'no-such-run', 'why not')).rejects.toThrow('unknown run no-such-run');
    await expect(cancelRun(deps, '1', '')).rejects.toThrow(InvalidInputError);
  });
});
