import { describe, expect, it } from 'vitest';
import {
  BOOT_CHECK_JOB,
  BootHealer,
  NotLeaderError,
  bootKey,
  leaderKey,
  requestBootCheck,
  ClusterSnapshotBuilder,
  EventBus,
  bootAgents,
  createBootCheckHandler,
  createSystemWorker,
  readBootStates,
  triggerRun,
  type AgentDefinition,
} from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, log, onCleanup, retention, sleep, type DependencyCluster } from './_dependency-cluster.js';

const redis = useTestRedis();

/** Boot checks record when they ran; `failing` agents answer unhealthy with a reason. */
function bootGraph(graph: Record<string, string[]>, failing: Record<string, string> = {}) {
  const checks = new Map<string, { start: number; end: number }>();
  const agents: Partial<AgentDefinition>[] = Object.entries(graph).map(([name, dependsOn]) => ({
    name,
    dependsOn,
    healthCheck: async () => {
      const start = Date.now();
      await sleep(30);
      checks.set(name, { start, end: Date.now() });
      return failing[name] ? { healthy: false, reason: failing[name] } : { healthy: true };
    },
  }));
  return { agents, checks };
}

async function startSystemWorkers(c: DependencyCluster, count: number) {
  for (let i = 0; i < count; i++) {
    const own = redis.client();
    const worker = createSystemWorker({
      connection: own,
      keys: c.keys,
      log,
      workerId: `sys-${i}`,
      handlers: { [BOOT_CHECK_JOB]: createBootCheckHandler({ registry: c.registry, log }) },
    });
    onCleanup(() => worker.close());
    await worker.waitUntilReady();
  }
}

async function boot(c: DependencyCluster) {
  const bus = new EventBus({ redis: c.redis, keys: c.keys, log });
  return bootAgents({ systemQueue: c.queues.system, registry: c.registry, redis: c.redis, keys: c.keys, bus, log, checkTimeoutMs: 2_000, pickupTimeoutMs: 10_000 });
}

/** Every check of layer k started after every check of layer k-1 ended. */
function expectLayeredOrder(c: DependencyCluster, checks: Map<string, { start: number; end: number }>) {
  for (let k = 1; k < c.registry.layers.length; k++) {
    const previousEnd = Math.max(...c.registry.layers[k - 1]!.map((a) => checks.get(a)!.end));
    for (const agent of c.registry.layers[k]!) expect(checks.get(agent)!.start).toBeGreaterThanOrEqual(previousEnd);
  }
}

describe('layered boot', () => {
  it('boots a 4-layer DAG layer by layer on workers, with boot:layer events', async () => {
    const { agents, checks } = bootGraph({
      'crm-sync': [],
      'calendar-sync': [],
      enrich: ['crm-sync'],
      'lead-scorer': ['enrich', 'calendar-sync'],
      'email-drafter': ['lead-scorer'],
      'weekly-report': ['lead-scorer', 'crm-sync'],
    });
    const c = await dependencyCluster(redis, agents);
    expect(c.registry.layers).toHaveLength(4);
    await startSystemWorkers(c, 2);
    const report = await boot(c);

    expectLayeredOrder(c, checks);
    expect(report.layers.map((l) => l.agents)).toEqual(c.registry.layers);
    expect(Object.values(report.agents).every((s) => s.status === 'ok')).toBe(true);
    await waitFor(() => c.events.filter((e) => e.type === 'boot:layer').length === 4, { what: 'four boot:layer events' });
    const layerEvents = c.events.filter((e) => e.type === 'boot:layer');
    expect(layerEvents.map((e) => e.data.layer)).toEqual([0, 1, 2, 3]);
    expect(layerEvents[3]!.data).toMatchObject({ agents: ['email-drafter', 'weekly-report'], outcomes: { 'email-drafter': 'ok', 'weekly-report': 'ok' } });
    expect(typeof layerEvents[0]!.data.durationMs).toBe('number');
    await waitFor(() => c.events.filter((e) => e.type === 'boot:agent').length === 6, { what: 'one boot:agent event per agent' });
  });

  it('boots a 6-layer DAG in order', async () => {
    const { agents, checks } = bootGraph({
      l0: [],
      l1: ['l0'],
      l2a: ['l1'],
      l2b: ['l0', 'l1'],
      l3: ['l2a', 'l2b'],
      l4: ['l3', 'l0'],
      l5: ['l4', 'l2a'],
      side: [],
    });
    const c = await dependencyCluster(redis, agents);
    expect(c.registry.layers).toHaveLength(6);
    await startSystemWorkers(c, 2);
    const report = await boot(c);
    expectLayeredOrder(c, checks);
    expect(report.layers).toHaveLength(6);
    expect(checks.size).toBe(8);
  });

  it('blocks exactly the transitive dependents of a failed boot check, with the reason, and skips their runs', async () => {
    const { agents, checks } = bootGraph(
      {
        'crm-sync': [],
        'calendar-sync': [],
        enrich: ['crm-sync'],
        'lead-scorer': ['enrich', 'calendar-sync'],
        'calendar-digest': ['calendar-sync'],
        'email-drafter': ['lead-scorer'],
      },
      { 'crm-sync': 'CRM API unreachable' },
    );
    const c = await dependencyCluster(redis, agents);
    await startSystemWorkers(c, 1);
    await boot(c);

    const reason = 'dependency crm-sync failed boot: CRM API unreachable';
    const states = await readBootStates({ redis: c.redis, keys: c.keys });
    const summary = Object.fromEntries([...states].map(([agent, s]) => [agent, [s.status, s.reason ?? null]]));
    expect(summary).toEqual({
      'crm-sync': ['failed', 'CRM API unreachable'],
      'calendar-sync': ['ok', null],
      enrich: ['blocked', reason],
      'lead-scorer': ['blocked', reason],
      'calendar-digest': ['ok', null],
      'email-drafter': ['blocked', reason],
    });
    // Blocked agents get no check; the others do.
    expect([...checks.keys()].sort()).toEqual(['calendar-digest', 'calendar-sync', 'crm-sync']);

    const { view: snapshot } = await new ClusterSnapshotBuilder({ redis: c.redis, keys: c.keys, queues: c.queues, registry: c.registry, agentHistograms: false }).build();
    expect(snapshot.agents['email-drafter']!.boot).toMatchObject({ status: 'blocked', layer: 3, reason });
    expect(snapshot.agents['crm-sync']!.boot).toMatchObject({ status: 'failed', layer: 0 });

    await c.startWorker();
    const runs = await Promise.all(['email-drafter', 'enrich', 'calendar-digest'].map((agent) => triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, agent)));
    const results = await waitFor(
      async () => {
        const jobs = await Promise.all(runs.map((r) => c.queues.agents.getJob(r.runId)));
        return jobs.every((j) => j?.finishedOn) ? jobs.map((j) => j!.returnvalue) : undefined;
      },
      { what: 'the three runs to finish' },
    );
    expect(results).toEqual([
      expect.objectContaining({ outcome: 'skipped', reasons: [reason] }),
      expect.objectContaining({ outcome: 'skipped', reasons: [reason] }),
      expect.objectContaining({ outcome: 'success' }),
    ]);
  });

  it('calls an agent no worker checked in time "unchecked" and blocks nothing', async () => {
    const { agents } = bootGraph({ a: [], b: ['a'] });
    const c = await dependencyCluster(redis, agents);
    const bus = new EventBus({ redis: c.redis, keys: c.keys, log });
    const report = await bootAgents({ systemQueue: c.queues.system, registry: c.registry, redis: c.redis, keys: c.keys, bus, log, checkTimeoutMs: 100, pickupTimeoutMs: 300 });
    expect(report.agents.a).toMatchObject({ status: 'unchecked', reason: expect.stringContaining('no worker took the boot check') });
    expect(report.agents.b!.status).toBe('unchecked');
  });
});

describe('boot healing and fencing', () => {
  it('writes no boot state once this replica lost the leader lease', async () => {
    const { agents } = bootGraph({ a: [], b: ['a'] });
    const c = await dependencyCluster(redis, agents);
    await startSystemWorkers(c, 1);
    const bus = new EventBus({ redis: c.redis, keys: c.keys, log });
    // The new leader's verdict, which a deposed leader must not overwrite.
    await c.redis.set(leaderKey(c.keys), 'replica-b');
    await c.redis.hset(bootKey(c.keys), 'a', JSON.stringify({ status: 'ok', layer: 0, at: 'by replica-b' }));
    const fence = { key: leaderKey(c.keys), id: 'replica-a' };
    await expect(bootAgents({ systemQueue: c.queues.system, registry: c.registry, redis: c.redis, keys: c.keys, bus, log, fence })).rejects.toThrow(new NotLeaderError('boot'));
    expect(await c.redis.hgetall(bootKey(c.keys))).toEqual({ a: JSON.stringify({ status: 'ok', layer: 0, at: 'by replica-b' }) });

    // While it holds the lease, the same boot writes.
    await c.redis.set(leaderKey(c.keys), 'replica-a');
    const report = await bootAgents({ systemQueue: c.queues.system, registry: c.registry, redis: c.redis, keys: c.keys, bus, log, fence, checkTimeoutMs: 2000 });
    expect(report.agents.b!.status).toBe('ok');
  });

  it('re-checks a failed agent with backoff, unblocks its dependents in the same round, and answers an on-demand request of a blocked one', async () => {
    let isCrmUp = false;
    const agents: Partial<AgentDefinition>[] = [
      { name: 'crm-sync', healthCheck: async () => (isCrmUp ? { healthy: true } : { healthy: false, reason: 'CRM API unreachable' }) },
      { name: 'enrich', dependsOn: ['crm-sync'] },
      { name: 'lead-scorer', dependsOn: ['enrich'] },
    ];
    const c = await dependencyCluster(redis, agents);
    await startSystemWorkers(c, 1);
    const bus = new EventBus({ redis: c.redis, keys: c.keys, log });
    let now = Date.parse('2030-01-01T00:00:00Z');
    const deps = { systemQueue: c.queues.system, registry: c.registry, redis: c.redis, keys: c.keys, bus, log, checkTimeoutMs: 2000, recheckBaseMs: 1000, clock: () => now };
    await bootAgents(deps);
    const healer = new BootHealer({ ...deps, canAct: async () => true });
    const states = () => readBootStates({ redis: c.redis, keys: c.keys });

    expect((await states()).get('crm-sync')).toMatchObject({ status: 'failed', failedChecks: 1, nextCheckAt: '2030-01-01T00:00:01.000Z' });
    expect(await healer.heal()).toEqual([]); // not due yet
    now += 1000;
    expect(await healer.heal()).toEqual(['crm-sync']); // due: fails again, dependents stay blocked
    expect((await states()).get('crm-sync')).toMatchObject({ status: 'failed', failedChecks: 2, nextCheckAt: '2030-01-01T00:00:03.000Z' });

    // An operator asks about a blocked dependent: answered at once (still blocked, with the cause).
    const seq = await requestBootCheck({ redis: c.redis, keys: c.keys }, 'lead-scorer');
    expect(await healer.heal()).toEqual(['lead-scorer']);
    expect((await states()).get('lead-scorer')).toMatchObject({ status: 'blocked', reason: 'dependency crm-sync failed boot: CRM API unreachable', requestSeq: seq });

    isCrmUp = true;
    now += 2000;
    expect(await healer.heal()).toEqual(['crm-sync', 'enrich', 'lead-scorer']);
    const healed = await states();
    expect([...healed.values()].map((s) => s.status)).toEqual(['ok', 'ok', 'ok']);
    expect(healed.get('crm-sync')!.failedChecks).toBeUndefined();
    expect(await healer.heal()).toEqual([]);
    const boots = () => c.events.filter((e) => e.type === 'boot:agent' && e.data.recheck === true).map((e) => `${e.agent}:${e.data.status}`);
    await waitFor(() => boots().length >= 5, { what: 'the re-checks on the bus' });
    expect(boots()).toEqual(['crm-sync:failed', 'lead-scorer:blocked', 'crm-sync:ok', 'enrich:ok', 'lead-scorer:ok']);
  });
});
