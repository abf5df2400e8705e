import { describe, expect, it } from 'vitest';
import { createKeys, createQueues, freePort } from '@werkpilot/shared';
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
  useTestRedis,
} from '@werkpilot/test-support';

/**
 * Issue 22, agents sharded by dependency component (WERKPILOT_SHARDS=3) on a 3-master Redis Cluster
 * (one replica each): a scheduler per shard and two workers serving all three. Four components —
 * a pipeline source → transform → load on a one-second cron, `pulse` every second (pinned to shard
 * 1), `beat` every two seconds (pinned to shard 2), and `oracle`, which answers requests (shard
 * 2) — are placed by their names or pins, each shard's prefix on its own master; cron runs go on in
 * every shard, the pipeline's dependency waits hold, `transform` asks `oracle` in another shard,
 * and a CLUSTER FAILOVER of one shard's master, then a SIGKILL of another's, leave the other shards
 * untouched and the shard's own runs resuming.
 */

const TOKEN = 'shards-token';
const fixture = useFailoverFixture<RedisClusterSet>('shards');
const { runLog, processes } = fixture;
const agentsDir = writeAgentsDir({
  // `queue`: the pipeline's run of source waits for a cron run in flight instead of being skipped.
  'source.ts': withRunLogImport(
    agentSource({ name: 'source', schedule: { cron: '* * * * * *' }, overlap: 'queue' }, `${RUN_LOG_STATEMENT} await new Promise((r) => setTimeout(r, 30)); return 1;`),
  ),
  'transform.ts': withRunLogImport(
    agentSource(
      { name: 'transform', dependsOn: ['source'] },
      `${RUN_LOG_STATEMENT} const answer = await ctx.request('oracle', { n: 21 }); if (answer.doubled !== 42) throw new Error('wrong answer ' + JSON.stringify(answer)); return 2;`,
    ),
  ),
  'load.ts': withRunLogImport(agentSource({ name: 'load', dependsOn: ['transform'] }, `${RUN_LOG_STATEMENT} return 3;`)),
  'pulse.ts': withRunLogImport(agentSource({ name: 'pulse', schedule: { cron: '* * * * * *' }, shard: 1 }, `${RUN_LOG_STATEMENT} return 1;`)),
  'beat.ts': withRunLogImport(agentSource({ name: 'beat', schedule: { cron: '*/2 * * * * *' }, shard: 2 }, `${RUN_LOG_STATEMENT} return 1;`)),
  'oracle.ts': agentSource({ name: 'oracle', shard: 2 }, 'return null;', 'onRequest: (payload) => ({ doubled: payload.n * 2 }),'),
});

/** The placement: the pins, and where rendezvous hashing puts the unpinned pipeline (shard 0). */
const EXPECTED_SHARDS = [
  { agents: ['load', 'source', 'transform'], expectedRunsPerHour: 3602 },
  { agents: ['pulse'], expectedRunsPerHour: 3600 },
  { agents: ['beat', 'oracle'], expectedRunsPerHour: 1801 },
];

const runs = () => runLog.runs();

describe.skipIf(fixture.missing)('agents sharded by dependency component over a 3-master Redis Cluster (WERKPILOT_SHARDS=3)', () => {
  it('places components by name and pin on three masters, runs every shard, keeps dependency waits and cross-shard requests, and survives a failover of one shard and a killed master of another', async () => {
    const cluster = fixture.adopt(await startRedisClusterSet());
    const prefix = uniquePrefix();
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    const env = {
      REDIS_URL: '',
      REDIS_CLUSTER_NODES: cluster.nodesEnv,
      WERKPILOT_PREFIX: prefix,
      WERKPILOT_SHARDS: '3',
      WERKPILOT_AGENTS: agentsDir,
      RUN_LOG: runLog.path,
      DASHBOARD_TOKEN: TOKEN,
      LOG_LEVEL: 'info',
      LOCK_DURATION_MS: '5000',
      STALLED_INTERVAL_MS: '1000',
      WORKER_HTTP_PORT: '0',
    };
    const schedulers = ports.map((port, shard) => startApp('scheduler', { ...env, PORT: String(port), WERKPILOT_SHARD: String(shard) }));
    const workers = [startApp('worker', env), startApp('worker', env)];
    processes.push(...schedulers, ...workers);
    for (const scheduler of schedulers) await scheduler.waitForLog(/dashboard on/, 40_000);
    for (const worker of workers) await worker.waitForLog(/worker online/, 40_000);
    const outputs = () => processes.map((p) => p.output().slice(-1500)).join('\n---\n');
    const api = async (shard: number, method: string, route: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${ports[shard]}${route}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, body: (await res.json()) as any };
    };

    // The placement: the same from every shard's scheduler, each serving its own.
    const views = await Promise.all([0, 1, 2].map(async (shard) => (await api(shard, 'GET', '/api/shards')).body));
    expect(views.map((view) => view.served)).toEqual([0, 1, 2]);
    for (const view of views) {
      expect(view.count).toBe(3);
      expect(view.shards.map((s: any) => ({ agents: s.agents, expectedRunsPerHour: s.expectedRunsPerHour }))).toEqual(EXPECTED_SHARDS);
      expect(view.shards).toEqual(views[0].shards);
    }
    const prefixes: string[] = views[0].shards.map((s: any) => s.prefix);
    expect((await api(1, 'GET', '/api/agents')).body.agents.map((a: any) => [a.name, a.shard])).toEqual([['pulse', 1]]);
    const elsewhere = await api(0, 'POST', '/api/agents/pulse/run', {});
    expect(elsewhere).toEqual({ status: 404, body: { error: 'agent pulse is not served here: shard 1 serves it (the scheduler started with WERKPILOT_SHARD=1)' } });

    // Each shard's slot is served by a different master.
    const owners = await Promise.all(prefixes.map((p) => cluster.ownerOf(`{${p}}`)));
    expect(new Set(owners.map((o) => o.master.port)).size).toBe(3);

    // Cron runs in every shard.
    await waitFor(() => ['source', 'pulse', 'beat'].every((agent) => runs().filter((r) => r.agent === agent).length >= 2), {
      timeoutMs: 30_000,
      what: () => `two cron runs of source, pulse and beat; runs: ${JSON.stringify(runs().slice(-10))}\n${outputs()}`,
    });

    // A pipeline in shard 0: dependency waits hold, and transform asks oracle in shard 2.
    const runPipeline = async () => {
      const queued = await api(0, 'POST', '/api/agents/source/run', { withDependents: true });
      expect(queued.status, JSON.stringify(queued.body)).toBe(202);
      const ids = new Map((queued.body.runs as { agent: string; runId: string }[]).map((r) => [r.runId, r.agent]));
      const done = await waitFor(
        () => {
          const ours = runs().filter((r) => ids.has(r.runId));
          return ours.length === 3 ? ours : undefined;
        },
        { timeoutMs: 20_000, what: () => `the three pipeline runs; output:\n${outputs()}` },
      );
      return done.sort((a, b) => a.at - b.at).map((r) => r.agent);
    };
    expect(await runPipeline()).toEqual(['source', 'transform', 'load']);

    // Every key written is under one of the three shard tags, and each tag holds keys.
    const everyKey: string[] = [];
    for (const node of cluster.nodes) {
      if (!String(await node.client().role()).startsWith('master')) continue;
      everyKey.push(...(await node.client().keys('*')));
    }
    const tags = prefixes.map((p) => `{${p}}:`);
    // Beside them only the fleet's layout record (shard-layout.ts), under the fleet prefix's tag.
    expect(everyKey.filter((key) => !tags.some((tag) => key.startsWith(tag)))).toEqual([`{${prefix}}:shards:layout`]);
    expect(tags.map((tag) => everyKey.some((key) => key.startsWith(tag)))).toEqual([true, true, true]);

    // A failover of shard 1's master: pulse resumes within 10 s, the other shards never stop.
    const owner = owners[1]!;
    expect(owner.replica).toBeDefined();
    const startedAt = Date.now();
    await owner.replica!.client().cluster('FAILOVER');
    await waitFor(async () => (await cluster.ownerOf(`{${prefixes[1]}}`)).master === owner.replica, { timeoutMs: 20_000, intervalMs: 50, what: 'the replica serving the slot' });
    const switchedAt = Date.now();
    const resumed = await waitFor(() => runs().find((r) => r.agent === 'pulse' && r.at > switchedAt), {
      timeoutMs: 10_000,
      intervalMs: 50,
      what: () => `a pulse run within 10 s of the failover; output:\n${outputs()}`,
    });
    const beatsDuring = runs().filter((r) => r.agent === 'beat' && r.at > startedAt && r.at <= resumed.at).length;
    expect(await runPipeline()).toEqual(['source', 'transform', 'load']);
    // CLUSTER FAILOVER waits for the replica to catch up: nothing ran twice so far.
    const beforeKill = runs();
    expect(beforeKill.length - new Set(beforeKill.map((r) => r.runId)).size).toBe(0);

    // Shard 2's master killed outright: beat resumes once its replica is elected, and transform in
    // shard 0 reaches oracle in shard 2 again; shards 0 and 1 never notice.
    const killed = owners[2]!;
    expect(killed.replica).toBeDefined();
    const killedAt = Date.now();
    await killed.master.stop('SIGKILL');
    await waitFor(async () => (await cluster.ownerOf(`{${prefixes[2]}}`)).master === killed.replica, { timeoutMs: 20_000, intervalMs: 50, what: 'the replica serving shard 2' });
    const electedAt = Date.now();
    const beatResumed = await waitFor(() => runLog.firstRunAfter(electedAt, 'beat'), {
      timeoutMs: 10_000,
      intervalMs: 50,
      what: () => `a beat run within 10 s of the election; output:\n${outputs()}`,
    });
    const pulsesDuringKill = runs().filter((r) => r.agent === 'pulse' && r.at > killedAt && r.at <= electedAt).length;
    expect(await runPipeline()).toEqual(['source', 'transform', 'load']);
    for (const p of processes) expect(p.proc.exitCode, p.output().slice(-1500)).toBe(null);
    for (const p of processes) expect(p.output()).not.toMatch(/CROSSSLOT/);

    const executed = runs();
    const perShard = EXPECTED_SHARDS.map(({ agents }) => executed.filter((r) => agents.includes(r.agent)).length);
    console.log(
      `[measure] sharded Redis Cluster: runs per shard ${perShard.join(' / ')}; shard 1 CLUSTER FAILOVER: slot switched after ${switchedAt - startedAt} ms, ` +
        `first pulse run ${resumed.at - switchedAt} ms later, ${beatsDuring} beat runs in shard 2 meanwhile; shard 2 master SIGKILLed: replica elected after ` +
        `${electedAt - killedAt} ms, first beat run ${beatResumed.at - electedAt} ms later, ${pulsesDuringKill} pulse runs in shard 1 meanwhile; ` +
        `${executed.length - new Set(executed.map((r) => r.runId)).size} runs executed twice after the kill (asynchronous replication)`,
    );
    expect(pulsesDuringKill).toBeGreaterThan(0);

    const stopping = processes.splice(0);
    for (const p of stopping) p.kill('SIGTERM');
    for (const p of stopping) expect(await p.exited, p.output().slice(-1500)).toBe(0);
  }, 120_000);
});

const single = useTestRedis();

describe('a scheduler of a sharded fleet', () => {
  it('exits 2 before serving, naming the prefix and the agent, when WERKPILOT_SHARDS changes while a run of a moving agent waits', async () => {
    const prefix = uniquePrefix();
    const queues = createQueues({ connection: single.client(), keys: createKeys(prefix) });
    await queues.agents.add('pulse', { agent: 'pulse', trigger: 'manual' });
    const scheduler = startApp('scheduler', { REDIS_URL: single.url, WERKPILOT_PREFIX: prefix, WERKPILOT_SHARDS: '3', WERKPILOT_SHARD: '0', WERKPILOT_AGENTS: agentsDir, PORT: '0' });
    expect(await scheduler.exited).toBe(2);
    // Refused before it serves: the last line is the one the process entry prints for exit 2.
    expect(scheduler.output().trim().split('\n').at(-1)).toBe(
      `werkpilot scheduler: the shard layout changes (WERKPILOT_SHARDS 1 → 3, or pins or dependencies), but ${prefix} holds 1 run of pulse, which moves elsewhere: ` +
        'run the old layout until those runs are done and its schedulers are stopped, then start this one (docs/operations.md#shards)',
    );
    expect(await queues.agents.count()).toBe(1);
    await queues.close();
  }, 30_000);

  it('exits 2 with one line when it is not told which shard to serve', async () => {
    const scheduler = startApp('scheduler', { WERKPILOT_SHARDS: '3', WERKPILOT_AGENTS: agentsDir, PORT: '0', REDIS_URL: 'redis://127.0.0.1:1' });
    expect(await scheduler.exited).toBe(2);
    expect(scheduler.output().trim()).toBe('werkpilot scheduler: WERKPILOT_SHARDS=3 needs WERKPILOT_SHARD (0 to 2) for a scheduler: each shard has its own (docs/operations.md#shards)');
  }, 30_000);
});
