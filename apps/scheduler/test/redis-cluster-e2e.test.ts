import { describe, expect, it } from 'vitest';
import { EventBus, closeRedisConnection, createKeys, createLogger, createRedisConnection, freePort, type BusEvent } from '@werkpilot/shared';
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
 * Issue 22, Redis Cluster with every key in one hash-tag shard: a scheduler and a worker on a
 * 3-master cluster (one replica each) run a cron agent and a pipeline with dependencies, before and
 * (one of whose steps asks another agent with ctx.request) before and after a `CLUSTER FAILOVER`
 * of the master that serves the prefix's slot; every key they wrote is
 * under that one tag (so BullMQ's scripts and ours stay single-slot), and the bus's pub/sub reaches
 * a subscriber on whichever node it landed.
 */

const TOKEN = 'cluster-token';
const fixture = useFailoverFixture<RedisClusterSet>('cluster');
const { runLog, processes } = fixture;
const agentsDir = writeAgentsDir({
  'every-second.ts': withRunLogImport(agentSource({ name: 'every-second', schedule: { cron: '* * * * * *' } }, `${RUN_LOG_STATEMENT} return 1;`)),
  'source.ts': withRunLogImport(agentSource({ name: 'source' }, `${RUN_LOG_STATEMENT} await new Promise((r) => setTimeout(r, 30)); return 1;`)),
  // Asks another agent on the way (ctx.request: a BLPOP on the responder's list, the reply by pub/sub).
  'transform.ts': withRunLogImport(
    agentSource(
      { name: 'transform', dependsOn: ['source'] },
      `${RUN_LOG_STATEMENT} const answer = await ctx.request('oracle', { n: 21 }); if (answer.doubled !== 42) throw new Error('wrong answer ' + JSON.stringify(answer)); return 2;`,
    ),
  ),
  'oracle.ts': agentSource({ name: 'oracle' }, 'return null;', 'onRequest: (payload) => ({ doubled: payload.n * 2 }),'),
  'load.ts': withRunLogImport(agentSource({ name: 'load', dependsOn: ['transform'] }, `${RUN_LOG_STATEMENT} return 3;`)),
  'report.ts': withRunLogImport(agentSource({ name: 'report', dependsOn: ['load', 'source'] }, `${RUN_LOG_STATEMENT} return 4;`)),
});

const runs = () => runLog.runs();

describe.skipIf(fixture.missing)('a Redis Cluster (3 masters, 1 replica each) with every key in one hash-tag shard', () => {
  it('runs cron agents and a pipeline with dependencies, keeps every key under the prefix tag, and survives a CLUSTER FAILOVER of that shard', async () => {
    const cluster = fixture.adopt(await startRedisClusterSet());
    const prefix = uniquePrefix();
    const keys = createKeys(prefix);
    const log = createLogger({ level: 'silent', name: 'test' });
    const client = createRedisConnection({ target: { kind: 'cluster', nodes: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })) }, role: 'test', log });
    const bus = new EventBus({ redis: client, keys, log });
    const live: BusEvent[] = [];
    await bus.subscribe((e) => live.push(e));

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
    const api = async (method: string, route: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${port}${route}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    const outputs = () => processes.map((p) => p.output().slice(-2000)).join('\n---\n');

    const runPipeline = async () => {
      const queued = await api('POST', '/api/agents/source/run', { withDependents: true });
      expect(queued.status, JSON.stringify(queued.body)).toBe(202);
      const { pipelineId } = queued.body as { pipelineId: string };
      return waitFor(
        () => {
          const done = live.filter((e) => e.type === 'agent:completed' && e.data.pipelineId === pipelineId).map((e) => e.agent);
          return done.length === 4 ? done : undefined;
        },
        { timeoutMs: 20_000, what: () => `the four pipeline runs completed on the bus; output:\n${outputs()}` },
      );
    };

    await waitFor(() => runs().filter((r) => r.agent === 'every-second').length >= 2, { timeoutMs: 30_000, what: () => `two cron runs; output:\n${outputs()}` });
    expect(await runPipeline()).toEqual(['source', 'transform', 'load', 'report']);

    // Every key of ours and of BullMQ is under the prefix's tag, in that one slot on one master.
    const tag = `{${prefix}}`;
    const owner = await cluster.ownerOf(tag);
    const slot = Number(await owner.master.client().cluster('KEYSLOT', tag));
    const everyKey: string[] = [];
    for (const node of cluster.nodes) {
      if (!String(await node.client().role()).startsWith('master')) continue;
      everyKey.push(...(await node.client().keys('*')));
    }
    expect(everyKey.length).toBeGreaterThan(10);
    expect(everyKey.filter((k) => !k.startsWith(`${tag}:`))).toEqual([]);
    expect(Number(await owner.master.client().cluster('COUNTKEYSINSLOT', slot))).toBe(everyKey.length);

    // A coordinated failover of the shard's master: its replica takes over, the old master follows it.
    expect(owner.replica).toBeDefined();
    const startedAt = Date.now();
    await owner.replica!.client().cluster('FAILOVER');
    await waitFor(async () => (await cluster.ownerOf(tag)).master === owner.replica, { timeoutMs: 20_000, intervalMs: 50, what: 'the replica serving the slot' });
    const switchedAt = Date.now();
    const resumed = await waitFor(() => runLog.firstRunAfter(switchedAt, 'every-second'), {
      timeoutMs: 10_000,
      intervalMs: 50,
      what: () => `a cron run within 10 s of the failover; output:\n${outputs()}`,
    });
    const lastBefore = runLog.lastRunUntil(startedAt, 'every-second')!.at;
    expect(await runPipeline()).toEqual(['source', 'transform', 'load', 'report']);
    for (const p of processes) expect(p.proc.exitCode, p.output().slice(-1500)).toBe(null);

    const figures = [
      `CLUSTER FAILOVER: slot served by the replica after ${switchedAt - startedAt} ms, first cron run ${resumed.at - switchedAt} ms after that (longest gap between cron runs ${resumed.at - lastBefore} ms)`,
    ];
    // A master killed outright: redis-cluster-master-kill-e2e.test.ts.

    const executed = runs();
    const ranTwice = executed.length - new Set(executed.map((r) => r.runId)).size;
    figures.push(`${executed.length} runs executed, ${ranTwice} twice; ${everyKey.length} keys before the failover, all in slot ${slot}`);
    console.log(`[measure] Redis Cluster:\n  ${figures.join('\n  ')}`);
    // CLUSTER FAILOVER waits for the replica to catch up before it takes over: nothing is repeated.
    expect(ranTwice).toBe(0);
    for (const p of processes) expect(p.output()).not.toMatch(/CROSSSLOT/);

    await bus.close();
    await closeRedisConnection(client);
    const stopping = processes.splice(0);
    for (const p of stopping) p.kill('SIGTERM');
    for (const p of stopping) expect(await p.exited, p.output().slice(-1500)).toBe(0);
  }, 90_000);
});
