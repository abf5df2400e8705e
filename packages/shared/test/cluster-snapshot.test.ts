import { afterEach, describe, expect, it } from 'vitest';
import {
  AgentStateStore,
  CircuitBreaker,
  ClusterSnapshotBuilder,
  EventBus,
  HealthStore,
  SnapshotService,
  addChangeMarkTo,
  createWorkerRuntime,
  disableAgent,
  readScores,
  triggerRun,
  type AgentDefinition,
  type RunRecord,
} from '@werkpilot/shared';
import { createAgentCluster, useTestRedis, waitFor, type AgentCluster } from '@werkpilot/test-support';
import { log, retention } from './_dependency-cluster.js';

const redis = useTestRedis();
const clusters: AgentCluster[] = [];
const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()!().catch(() => {});
  while (clusters.length > 0) await clusters.pop()!.close();
});

async function cluster(agents: Partial<AgentDefinition>[]): Promise<AgentCluster> {
  const c = await createAgentCluster(redis, agents, { log });
  clusters.push(c);
  return c;
}

/** A builder that only learns of changes through the change feed: no sweep re-reads unmarked agents. */
function feedOnlyBuilder(c: AgentCluster, clock: () => number = Date.now): ClusterSnapshotBuilder {
  return new ClusterSnapshotBuilder({ redis: c.redis, keys: c.keys, registry: c.registry, queues: c.queues, agentHistograms: true, sweepPerBuild: 0, clock });
}

/** Records runs as the run path does (the same recordRun script), each followed by its change mark. */
async function record(c: AgentCluster, records: RunRecord[]): Promise<void> {
  const pipeline = c.redis.pipeline();
  for (const r of records) {
    c.state.addRecordTo(pipeline, r);
    addChangeMarkTo(pipeline, c.keys, [r.agent]);
  }
  await pipeline.exec();
}

describe('the cluster snapshot', () => {
  it('reflects a finished run within its bounded age, learning of it from the run path alone', async () => {
    const c = await cluster([{ name: 'alpha', run: async () => ({ ok: true }) }]);
    // The worker as apps/worker wires it: its outcome listeners include the change mark.
    const own = redis.client();
    const runtime = createWorkerRuntime({
      redis: own,
      bullConnection: redis.client(),
      keys: c.keys,
      registry: c.registry,
      log,
      workerId: 'w1',
      concurrency: 1,
      bus: new EventBus({ redis: own, keys: c.keys, log }),
      state: new AgentStateStore({ redis: own, keys: c.keys }),
      lockDurationMs: 30_000,
      stalledIntervalMs: 30_000,
    });
    closers.push(() => runtime.worker.close());
    await runtime.worker.waitUntilReady();

    const maxAgeMs = 60_000;
    let now = Date.now();
    const service = new SnapshotService({ builder: feedOnlyBuilder(c, () => now), maxAgeMs, log, clock: () => now });
    closers.push(() => service.close());
    const before = await service.current();
    expect(before.view.agents.alpha).toMatchObject({ runs: 0, p50: null });

    const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'alpha');
    await waitFor(async () => (await c.queues.agents.getJobState(runId)) === 'completed', { what: 'the run to complete' });
    // Within its age the same snapshot is served: no read of Redis per request.
    expect(await service.current()).toBe(before);

    now += maxAgeMs + 1;
    const after = await service.current();
    const state = await c.state.get('alpha');
    expect(state.runs).toBe(1);
    expect(after.view.agents.alpha).toMatchObject({ runs: 1, successes: 1, samples: 1, p50: state.p50, p99: state.p99, lastOutcome: 'success' });
    expect((await after.prometheus()).chunks.join('')).toContain('werkpilot_agent_runs_total{agent="alpha",outcome="success"} 1\n');
  });

  it('keeps percentiles, success rate and score exact while samples roll over the window, reading only new samples', async () => {
    const c = await cluster([{ name: 'alpha', timeoutMs: 5000 }]);
    const builder = feedOnlyBuilder(c);
    const random = seededRandom(7);
    let at = 1;
    // Batches of every size around the windows (100 outcomes, 1000 durations), skipped runs between.
    for (const size of [0, 1, 3, 99, 100, 101, 250, 999, 1000, 1001, 7, 1500, 2]) {
      const records: RunRecord[] = [];
      for (let i = 0; i < size; i += 1) {
        const isSkipped = random() < 0.1;
        records.push(
          isSkipped
            ? { agent: 'alpha', outcome: 'skipped', at: at++, error: 'overlap' }
            : { agent: 'alpha', outcome: random() < 0.8 ? 'success' : 'failure', durationMs: Math.floor(random() * 4000), at: at++ },
        );
      }
      await record(c, records);
      const snapshot = await builder.build();
      const expected = await c.state.get('alpha');
      const [score] = (await readScores({ redis: c.redis, keys: c.keys, circuit: new CircuitBreaker({ redis: c.redis, keys: c.keys }) }, [c.registry.require('alpha')])).values();
      const view = snapshot.view.agents.alpha!;
      expect({ ...view, score: view.score }, `after a batch of ${size}`).toMatchObject({ ...expected, score });
    }
  });

  it('sees health ratings, circuit resets and the enabled flag as soon as they change', async () => {
    const c = await cluster([{ name: 'alpha', maxRestartsPerHour: 1 }, { name: 'beta' }]);
    const builder = feedOnlyBuilder(c);
    const circuit = new CircuitBreaker({ redis: c.redis, keys: c.keys });
    const first = (await builder.build()).view.agents;
    expect(first.alpha).toMatchObject({ health: null, circuit: 'closed', enabled: true, restartsLastHour: 0 });

    await new HealthStore({ redis: c.redis, keys: c.keys }).write(new Map([['beta', { state: 'degraded', reasons: ['p95 too high'] }]]), Date.now());
    for (let i = 0; i < 2; i += 1) await circuit.record({ agent: 'alpha', outcome: 'failure', at: Date.now() }, 1);
    await record(c, [{ agent: 'alpha', outcome: 'failure', durationMs: 5, at: Date.now(), error: 'boom' }]);
    await disableAgent({ redis: c.redis, keys: c.keys }, 'beta');
    const changed = (await builder.build()).view.agents;
    expect(changed.beta).toMatchObject({ health: 'degraded', healthReasons: ['p95 too high'], enabled: false });
    expect(changed.alpha).toMatchObject({ circuit: 'open', restartsLastHour: 2, lastError: 'boom' });

    await circuit.reset('alpha');
    expect((await builder.build()).view.agents.alpha).toMatchObject({ circuit: 'closed', restartsLastHour: 0, circuitOpenedAt: null });
  });
});

/** Deterministic pseudo-random numbers in [0, 1), so a failure can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}
