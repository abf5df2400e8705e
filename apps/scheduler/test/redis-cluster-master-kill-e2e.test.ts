import { describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import {
  RUN_LOG_STATEMENT,
  agentSource,
  startApp,
  startRedisClusterSet,
  uniquePrefix,
  useFailoverFixture,
  waitFor,
  withRunLogImport,
  writeAgentsDir,
  type RedisClusterSet,
} from '@werkpilot/test-support';

/**
 * Issue 22, Redis Cluster, the unplanned failover: the master serving the prefix's slot is killed
 * with SIGKILL (no CLUSTER FAILOVER handshake: its connections just die, and the slot has no
 * master until the replica is elected after cluster-node-timeout). A scheduler and a worker, not
 * restarted, must go on running a cron agent and an on-demand run within a bound after the
 * election. This used to stall in about half the runs: the worker took no due run afterwards, ever
 * (why: redis-connection.ts, the cluster's enableReadyCheck).
 */

const TOKEN = 'cluster-kill-token';
const fixture = useFailoverFixture<RedisClusterSet>('cluster-kill');
const { runLog, processes } = fixture;
const agentsDir = writeAgentsDir({
  'every-second.ts': withRunLogImport(agentSource({ name: 'every-second', schedule: { cron: '* * * * * *' } }, `${RUN_LOG_STATEMENT} return 1;`)),
  'on-demand.ts': withRunLogImport(agentSource({ name: 'on-demand' }, `${RUN_LOG_STATEMENT} return 2;`)),
});

describe.skipIf(fixture.missing)('a Redis Cluster whose master for the prefix slot is killed (SIGKILL)', () => {
  it('keeps taking due cron runs and queued runs within 10 s of the replica taking over, without restarting a process', async () => {
    const cluster = fixture.adopt(await startRedisClusterSet());
    const prefix = uniquePrefix();
    const port = await freePort();
    const env = {
      REDIS_URL: '',
      REDIS_CLUSTER_NODES: cluster.nodesEnv,
      WERKPILOT_PREFIX: prefix,
      WERKPILOT_AGENTS: agentsDir,
      RUN_LOG: runLog.path,
      PORT: String(port),
      DASHBOARD_TOKEN: TOKEN,
      LOG_LEVEL: 'info',
      LOCK_DURATION_MS: '5000',
      STALLED_INTERVAL_MS: '1000',
    };
    processes.push(startApp('scheduler', env), startApp('worker', env));
    await processes[0]!.waitForLog(/dashboard on/, 40_000);
    await processes[1]!.waitForLog(/worker online/, 40_000);
    const outputs = () => processes.map((p) => `${p.role}:\n${p.output().slice(-3000)}`).join('\n---\n');
    const cronRuns = () => runLog.runs().filter((r) => r.agent === 'every-second');
    await waitFor(() => cronRuns().length >= 3, { timeoutMs: 30_000, what: () => `three cron runs before the kill; output:\n${outputs()}` });

    const tag = `{${prefix}}`;
    const owner = await cluster.ownerOf(tag);
    expect(owner.replica).toBeDefined();
    const killedAt = Date.now();
    await owner.master.stop('SIGKILL');
    await waitFor(async () => (await cluster.ownerOf(tag)).master === owner.replica, {
      timeoutMs: 20_000,
      intervalMs: 50,
      what: () => `the replica (port ${owner.replica!.port}) serving the slot; its log:\n${owner.replica!.output().slice(-3000)}`,
    });
    const promotedAt = Date.now();

    const firstCron = await waitFor(() => runLog.firstRunAfter(promotedAt, 'every-second'), {
      timeoutMs: 10_000,
      intervalMs: 50,
      what: () => `a cron run within 10 s of the replica taking over; output:\n${outputs()}`,
    });
    // Not a one-off: the cron agent keeps going, and a run queued now (waiting, not delayed) is taken.
    await waitFor(() => cronRuns().filter((r) => r.at > firstCron.at).length >= 3, {
      timeoutMs: 10_000,
      what: () => `three more cron runs after the first; output:\n${outputs()}`,
    });
    const queuedAt = Date.now();
    const queued = await fetch(`http://127.0.0.1:${port}/api/agents/on-demand/run`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(queued.status).toBe(202);
    const onDemand = await waitFor(() => runLog.firstRunAfter(queuedAt, 'on-demand'), { timeoutMs: 10_000, what: () => `the on-demand run; output:\n${outputs()}` });

    const lastBefore = runLog.lastRunUntil(killedAt, 'every-second')!.at;
    console.log(
      `[measure] Redis Cluster, master SIGKILLed: slot served by the replica after ${promotedAt - killedAt} ms, first cron run ${firstCron.at - promotedAt} ms after that (longest gap between cron runs ${firstCron.at - lastBefore} ms), an on-demand run taken ${onDemand.at - queuedAt} ms after it was queued`,
    );
    for (const p of processes) expect(p.proc.exitCode, p.output().slice(-1500)).toBe(null);
    const stopping = processes.splice(0);
    for (const p of stopping) p.kill('SIGTERM');
    for (const p of stopping) expect(await p.exited, p.output().slice(-1500)).toBe(0);
  }, 120_000);
});
