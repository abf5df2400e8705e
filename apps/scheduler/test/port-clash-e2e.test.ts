import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { createKeys, createQueues, freePort, leaderKey, listLiveWorkers, loadRegistry, runJobOptions } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();
const agentsDir = writeAgentsDir({
  'nightly-export.ts': agentSource({ name: 'nightly-export', schedule: { cron: '* * * * * *' } }, 'return { ok: true };'),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

/** Everything a process printed, as lines (JSON logs and plain lines alike). */
const linesOf = (output: string) => output.split('\n').filter((l) => l.trim() !== '');

describe('a process whose port is taken', () => {
  it('a second worker on the same WORKER_HTTP_PORT exits 2 with one line, having fetched none of the runs waiting for it', async () => {
    const port = await freePort();
    const first = startApp('worker', { REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, WORKER_HTTP_PORT: String(port) });
    await first.waitForLog(/worker online/);

    // Runs that only the second worker could take: its own prefix.
    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const client = redis.client();
    const queues = createQueues({ connection: client, keys });
    toClose.push(() => queues.close());
    const spec = (await loadRegistry(agentsDir)).require('nightly-export');
    const waiting = await queues.agents.addBulk(
      Array.from({ length: 5 }, () => ({ name: spec.name, data: { agent: spec.name, trigger: 'manual' as const }, opts: runJobOptions(spec, { dlqRetain: 100, completedRetain: 1000 }) })),
    );

    const startedAt = Date.now();
    const second = startApp('worker', { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, WORKER_HTTP_PORT: String(port) });
    expect(await second.exited).toBe(2);
    console.log(`[measure] worker with a taken port: exit 2 after ${Date.now() - startedAt} ms (process start included)`);
    expect(linesOf(second.output())).toEqual([
      `werkpilot worker: WORKER_HTTP_PORT=${port}: port ${port} is already in use (EADDRINUSE); stop the process that holds it or set WORKER_HTTP_PORT to a free port`,
    ]);
    for (const job of waiting) {
      const now = (await queues.agents.getJob(job.id!))!;
      expect(await now.getState()).toBe('prioritized');
      expect(now.attemptsStarted).toBe(0);
    }
    expect(await listLiveWorkers({ redis: client, keys })).toEqual([]);

    // The first one never noticed.
    expect(first.proc.exitCode).toBe(null);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    first.kill('SIGTERM');
    expect(await first.exited).toBe(0);
  }, 60_000);

  it('a scheduler on a taken PORT exits 2 with one line, having taken no leader lease and planned nothing', async () => {
    // Whatever holds the port: here a plain TCP listener.
    const holder = createServer().listen(0, '0.0.0.0');
    await new Promise((resolve) => holder.once('listening', resolve));
    toClose.push(() => new Promise((resolve) => holder.close(resolve)));
    const port = (holder.address() as { port: number }).port;

    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const client = redis.client();
    const scheduler = startApp('scheduler', { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port) });
    expect(await scheduler.exited).toBe(2);
    expect(linesOf(scheduler.output())).toEqual([
      `werkpilot scheduler: PORT=${port}: port ${port} is already in use (EADDRINUSE); stop the process that holds it or set PORT to a free port`,
    ]);
    expect(await client.get(leaderKey(keys))).toBe(null);
    expect(await client.keys(`{${prefix}}:*`)).toEqual([]);
  }, 30_000);
});
