import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EventBus,
  InvalidInputError,
  RunFinishedError,
  RunNotFoundError,
  cancelRun,
  createKeys,
  createLogger,
  createQueues,
  loadRegistry,
  runJobOptions,
  triggerRun,
  type BusEvent,
  type CancelRunDeps,
  type Queues,
  type Registry,
} from '@werkpilot/shared';
import { startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-cancel-'));
const runLog = path.join(scratch, 'runs.txt');

// `long` runs until its signal aborts, then writes down why (in whichever worker process ran it).
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
});

const prefix = uniquePrefix();
const keys = createKeys(prefix);
let workers: AppProcess[] = [];
let queues: Queues;
let registry: Registry;
let deps: CancelRunDeps;
const events: BusEvent[] = [];

beforeAll(async () => {
  const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, RUN_LOG: runLog };
  workers = [startApp('worker', env), startApp('worker', env)];
  registry = await loadRegistry(agentsDir);
  const connection = redis.client();
  queues = createQueues({ connection, keys });
  const bus = new EventBus({ redis: connection, keys, log });
  await bus.subscribe((e) => events.push(e));
  deps = { queue: queues.agents, redis: connection, keys, bus, ackTimeoutMs: 10_000 };
  await Promise.all(workers.map((w) => w.waitForLog(/worker online/, 45_000)));
}, 60_000);

afterAll(async () => {
  for (const w of workers) w.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
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

describe('cancelling runs', () => {
  it('aborts a running run on the worker that runs it: failed with the reason, no retry, agent:cancelled', async () => {
    const { runId } = await triggerRun({ queue: queues.agents, registry, retention }, 'long');
    const started = await waitFor(() => lines().find((l) => l.startsWith(`started ${runId} `)), { timeoutMs: 20_000, what: 'the run to start' });
    const runnerPid = Number(started.split(' ')[2]);

    const result = await cancelRun(deps, runId, 'operator said stop');
    expect(result).toMatchObject({ runId, agent: 'long', outcome: 'aborted' });
    if (result.outcome === 'aborted') expect(result.workerId).toContain(`:${runnerPid}:`);

    await waitFor(async () => (await queues.agents.getJobState(runId)) === 'failed', { timeoutMs: 20_000, what: 'the run to fail' });
    const job = (await queues.agents.getJob(runId))!;
    expect(job.failedReason).toBe('cancelled: operator said stop');
    expect(job.attemptsMade).toBe(1);
    expect(job.opts.attempts).toBe(3);
    expect(lines()).toContain(`aborted ${runId} cancelled: operator said stop`);
    await waitFor(() => events.some((e) => e.type === 'agent:cancelled' && e.data.runId === runId));
    const cancelled = events.find((e) => e.type === 'agent:cancelled' && e.data.runId === runId)!;
    expect(cancelled).toMatchObject({ agent: 'long', data: { reason: 'operator said stop', attempt: 1 } });
    expect(events.some((e) => e.type === 'agent:retrying' && e.data.runId === runId)).toBe(false);
    expect(lines().filter((l) => l.startsWith(`started ${runId} `))).toHaveLength(1);

    await expect(cancelRun(deps, runId, 'again')).rejects.toThrow(RunFinishedError);
    await expect(cancelRun(deps, runId, 'again')).rejects.toThrow(`run ${runId} already failed; only a queued or running run can be cancelled`);
  }, 60_000);

  it('removes a queued run and a delayed run before any worker takes them', async () => {
    await queues.agents.pause();
    try {
      const { runId: queuedId } = await triggerRun({ queue: queues.agents, registry, retention }, 'long');
      const delayed = await queues.agents.add('long', { agent: 'long', trigger: 'manual' }, { ...runJobOptions(registry.require('long'), retention), delay: 60_000 });

      await expect(cancelRun(deps, queuedId, 'not needed')).resolves.toMatchObject({ runId: queuedId, outcome: 'removed', state: 'prioritized' });
      await expect(cancelRun(deps, delayed.id!, 'not needed')).resolves.toMatchObject({ outcome: 'removed', state: 'delayed' });
      expect(await queues.agents.getJob(queuedId)).toBeUndefined();
      expect(await queues.agents.getJob(delayed.id!)).toBeUndefined();
      await waitFor(() => events.filter((e) => e.type === 'agent:cancelled' && [queuedId, delayed.id].includes(e.data.runId as string)).length === 2);
    } finally {
      await queues.agents.resume();
    }
    expect(lines().some((l) => l.includes('not needed'))).toBe(false);
  });

  it('refuses an unknown run or a bad reason with a clear error', async () => {
    await expect(cancelRun(deps, 'no-such-run', 'why not')).rejects.toThrow(RunNotFoundError);
    await expect(cancelRun(deps, 'no-such-run', 'why not')).rejects.toThrow('unknown run no-such-run');
    await expect(cancelRun(deps, '1', '')).rejects.toThrow(InvalidInputError);
  });
});
