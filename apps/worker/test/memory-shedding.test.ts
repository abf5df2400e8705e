import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EventBus, createKeys, createLogger, createQueues, loadRegistry, runJobOptions, type BusEvent } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();
const retention = { dlqRetain: 100, completedRetain: 1000 };
const once = { retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 100 } } };
const CONCURRENCY = 4;
const RUNS = 20;

const agentsDir = writeAgentsDir({
  // Fills its worker's heap to 91 % and holds it until the file `ctx.data.release` appears.
  'hog.ts': agentSource(
    { name: 'hog', priority: 1, timeoutMs: 60_000, ...once },
    `const { getHeapStatistics } = await import('node:v8');
     const fs = await import('node:fs');
     const percent = () => { const h = getHeapStatistics(); return (h.used_heap_size / h.heap_size_limit) * 100; };
     const hoard = (globalThis.__hoard ??= []);
     while (percent() < 91) {
       hoard.push(new Array(percent() > 75 ? 16_384 : 65_536).fill(Math.random()));
       if (percent() > 75) await new Promise((r) => setTimeout(r, 5));
     }
     const timer = setInterval(() => { if (fs.existsSync(ctx.data.release)) { hoard.length = 0; clearInterval(timer); } }, 100);
     return { heapPercent: Math.round(percent()) };`,
  ),
  'report.ts': agentSource({ name: 'report', priority: 3, ...once }, 'await new Promise((r) => setTimeout(r, 50)); return { ok: true };'),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

describe('a worker at 90 % heap beside an idle one', () => {
  it('hands back at most its concurrency of priority-3 runs, which the other worker runs; it fetches nothing until it recovers', async () => {
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
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, WORKER_CONCURRENCY: String(CONCURRENCY) };
    const release = path.join(agentsDir, `release-${prefix}`);

    const pressured = startApp('worker', { ...env, MEMORY_CHECK_INTERVAL_MS: '200', NODE_OPTIONS: '--max-old-space-size=128 --max-semi-space-size=1 --expose-gc' });
    await pressured.waitForLog(/worker online/);
    const pressuredId = pressured.logs().find((l) => l.msg === 'worker online')!.workerId;
    await add('hog', { release });
    await waitFor(() => events.find((e) => e.type === 'memory:pressure' && e.data.workerId === pressuredId), {
      timeoutMs: 30_000,
      what: () => `memory:pressure from the hogged worker; output:\n${pressured.output().slice(-3000)}`,
    });

    // Queued while the pressured worker is the only one: it fetches some (its free slots' worth),
    // hands them back and pauses, whatever the timing; only then does the relaxed worker come.
    const jobs = await Promise.all(Array.from({ length: RUNS }, () => add('report')));
    await pressured.waitForLog(/pausing this worker's intake/, 30_000);
    const relaxed = startApp('worker', env);
    await relaxed.waitForLog(/worker online/);
    const relaxedId = relaxed.logs().find((l) => l.msg === 'worker online')!.workerId;
    await waitFor(async () => (await queues.agents.getCompletedCount()) >= RUNS + 1, { timeoutMs: 30_000, what: `${RUNS} priority-3 runs completed` });

    const done = await Promise.all(jobs.map((j) => queues.agents.getJob(j.id!)));
    expect(done.map((j) => (j!.returnvalue as { workerId: string }).workerId)).toEqual(jobs.map(() => relaxedId));
    expect(done.every((j) => j!.attemptsMade === 1)).toBe(true);
    const handBacks = pressured.logs().filter((l) => l.msg === 'run handed back to the queue').length;
    const extraStarts = done.reduce((sum, j) => sum + j!.attemptsStarted - 1, 0);
    console.log(`[measure] memory shedding: ${handBacks} hand-backs for ${RUNS} priority-3 runs (concurrency ${CONCURRENCY}); ${extraStarts} extra starts in total`);
    expect(handBacks).toBeGreaterThanOrEqual(1);
    expect(handBacks).toBeLessThanOrEqual(CONCURRENCY);
    expect(extraStarts).toBe(handBacks);
    expect(pressured.logs().filter((l) => typeof l.msg === 'string' && l.msg.includes("pausing this worker's intake")).length).toBe(1);

    // Recovered (the hog lets go, the monitor collects), it takes runs again.
    writeFileSync(release, 'now');
    await pressured.waitForLog(/memory recovered: this worker takes runs again/, 30_000);
    relaxed.kill('SIGTERM');
    expect(await relaxed.exited).toBe(0);
    const after = await add('report');
    await waitFor(async () => (await queues.agents.getJobState(after.id!)) === 'completed', { timeoutMs: 15_000, what: 'a run on the recovered worker' });
    expect(((await queues.agents.getJob(after.id!))!.returnvalue as { workerId: string }).workerId).toBe(pressuredId);
    pressured.kill('SIGTERM');
    expect(await pressured.exited).toBe(0);
  }, 120_000);
});
