import { afterEach, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import {
  AgentStateStore,
  CircuitBreaker,
  EventBus,
  GateCache,
  HealthMonitor,
  HealthStore,
  buildRegistry,
  createHealthCheckHandler,
  createKeys,
  createLogger,
  createQueues,
  createSystemWorker,
  dependencyHealthRule,
  evaluateHealth,
  type AgentDefinition,
  type BusEvent,
  type HealthInputs,
  type RunJobData,
} from '@werkpilot/shared';
import { uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const NOW = Date.UTC(2026, 0, 5, 12);

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A healthy agent's inputs; each test changes one thing. */
function inputs(change: Partial<HealthInputs> & { stateChange?: Partial<HealthInputs['state']> } = {}): HealthInputs {
  const { stateChange, ...rest } = change;
  return {
    spec: { name: 'crm-sync', schedule: { cron: '*/5 * * * *' }, timeoutMs: 10_000 },
    state: { consecutiveFailures: 0, lastSuccessAt: new Date(NOW - 60_000).toISOString(), recentSuccessRate: 1, recentRuns: 100, p95: 1000, ...stateChange },
    circuit: { state: 'closed' },
    isDisabled: false,
    hasLiveWorker: true,
    now: NOW,
    ...rest,
  };
}

describe('health rules', () => {
  it('rates an agent with nothing wrong healthy, without reasons', () => {
    expect(evaluateHealth(inputs())).toEqual({ state: 'healthy', reasons: [] });
  });

  it.each<[string, Parameters<typeof inputs>[0], string]>([
    ['disabled', { isDisabled: true }, 'disabled'],
    ['circuit open', { circuit: { state: 'open' } }, 'circuit open'],
    ['circuit half-open', { circuit: { state: 'half-open' } }, 'circuit half-open'],
    ['3 consecutive failures', { stateChange: { consecutiveFailures: 3 } }, '3 consecutive failures'],
    ['a failing healthCheck', { healthCheck: { healthy: false, reason: 'CRM API returns 401' } }, 'healthCheck failed: CRM API returns 401'],
    ['a healthCheck that timed out', { healthCheck: { healthy: false, reason: 'timed out after 10000 ms' } }, 'healthCheck failed: timed out after 10000 ms'],
    ['no live worker', { hasLiveWorker: false }, 'no live worker'],
    [
      'a last success older than 3 schedule intervals',
      { stateChange: { lastSuccessAt: new Date(NOW - 16 * 60_000).toISOString() } },
      'last success 16.0 min ago, over 3 schedule intervals (15.0 min)',
    ],
  ])('rates %s unhealthy, saying so', (_name, change, reason) => {
    expect(evaluateHealth(inputs(change))).toEqual({ state: 'unhealthy', reasons: [reason] });
  });

  it('keeps an agent with 2 consecutive failures or a success 3 intervals ago healthy', () => {
    expect(evaluateHealth(inputs({ stateChange: { consecutiveFailures: 2 } })).state).toBe('healthy');
    expect(evaluateHealth(inputs({ stateChange: { lastSuccessAt: new Date(NOW - 15 * 60_000).toISOString() } })).state).toBe('healthy');
  });

  it.each<[string, Parameters<typeof inputs>[0], string]>([
    ['a success rate under 90 %', { stateChange: { recentSuccessRate: 0.89, recentRuns: 100 } }, 'success rate 89% over the last 100 runs (under 90%)'],
    ['a p95 over 80 % of its timeout', { stateChange: { p95: 8001 } }, 'p95 8001 ms is over 80% of timeoutMs 10000 ms'],
  ])('rates %s degraded, saying so', (_name, change, reason) => {
    expect(evaluateHealth(inputs(change))).toEqual({ state: 'degraded', reasons: [reason] });
  });

  it('lists every reason, unhealthy ones first, and lets unhealthy win over degraded', () => {
    const rating = evaluateHealth(inputs({ circuit: { state: 'open' }, stateChange: { consecutiveFailures: 5, recentSuccessRate: 0.5 } }));
    expect(rating.state).toBe('unhealthy');
    expect(rating.reasons).toEqual(['circuit open', '5 consecutive failures', 'success rate 50% over the last 100 runs (under 90%)']);
  });
});

describe('health store', () => {
  it('publishes health:changed only when the state changes, with the old and new state and reasons', async () => {
    const keys = createKeys(uniquePrefix());
    const store = new HealthStore({ redis: redis.client(), keys });
    const bus = new EventBus({ redis: redis.client(), keys, log });
    const events: BusEvent[] = [];
    await bus.subscribe((e) => events.push(e));
    cleanups.push(() => bus.close());

    const rate = (state: 'healthy' | 'degraded' | 'unhealthy', reasons: string[]) => store.write(new Map([['crm-sync', { state, reasons }]]), NOW);
    expect(await rate('healthy', [])).toEqual([]); // never rated counts as healthy: no change
    expect(await rate('unhealthy', ['circuit open'])).toEqual(['crm-sync']);
    expect(await rate('unhealthy', ['circuit open', '3 consecutive failures'])).toEqual([]);
    expect(await rate('degraded', ['p95 9000 ms is over 80% of timeoutMs 10000 ms'])).toEqual(['crm-sync']);
    await bus.publish('marker');
    await waitFor(() => events.some((e) => e.type === 'marker'));

    const changes = events.filter((e) => e.type === 'health:changed');
    expect(changes.map((e) => e.data)).toEqual([
      { from: 'healthy', to: 'unhealthy', reasons: ['circuit open'], previousReasons: [] },
      { from: 'unhealthy', to: 'degraded', reasons: ['p95 9000 ms is over 80% of timeoutMs 10000 ms'], previousReasons: ['circuit open', '3 consecutive failures'] },
    ]);
    expect(changes[0]!.agent).toBe('crm-sync');
    expect((await store.getMany(['crm-sync'])).get('crm-sync')).toMatchObject({ state: 'degraded', checkedAt: new Date(NOW).toISOString() });
  });
});

describe('health monitor', () => {
  async function setup(agents: Partial<AgentDefinition>[], options: { hasLiveWorker?: boolean; canAct?: () => Promise<boolean> } = {}) {
    const keys = createKeys(uniquePrefix());
    const registry = buildRegistry(agents.map((a) => ({ definition: { run: async () => null, ...a }, source: `/t/${a.name}.ts` })));
    const connection = redis.client();
    const queues = createQueues({ connection, keys });
    const state = new AgentStateStore({ redis: connection, keys });
    const circuit = new CircuitBreaker({ redis: connection, keys });
    const store = new HealthStore({ redis: connection, keys });
    const worker = createSystemWorker({
      connection: redis.client(),
      keys,
      log,
      workerId: 'w1',
      handlers: { 'health-check': createHealthCheckHandler({ registry, log }) },
    });
    await worker.waitUntilReady();
    const monitor = new HealthMonitor({
      registry,
      state,
      circuit,
      store,
      systemQueue: queues.system,
      connection,
      log,
      hasLiveWorker: async () => options.hasLiveWorker ?? true,
      ...(options.canAct ? { canAct: options.canAct } : {}),
      intervalMs: 60_000,
      healthCheckTimeoutMs: 500,
    });
    cleanups.push(
      () => queues.close(),
      () => worker.close(),
      () => monitor.stop(),
    );
    return { keys, registry, state, circuit, store, monitor, connection };
  }

  it("runs agents' healthChecks on a worker: a failure, a throw and no answer in time are unhealthy", async () => {
    const { monitor } = await setup([
      { name: 'fine', healthCheck: () => ({ healthy: true }) },
      { name: 'refused', healthCheck: () => ({ healthy: false, reason: 'CRM API returns 401' }) },
      {
        name: 'throws',
        healthCheck: () => {
          throw new Error('DNS lookup failed');
        },
      },
      { name: 'hangs', healthCheck: ({ signal }) => new Promise((resolve) => signal.addEventListener('abort', () => resolve({ healthy: true }))) },
      { name: 'no-check' },
    ]);
    const ratings = await monitor.checkAll();
    expect(Object.fromEntries(ratings!)).toEqual({
      fine: { state: 'healthy', reasons: [] },
      refused: { state: 'unhealthy', reasons: ['healthCheck failed: CRM API returns 401'] },
      throws: { state: 'unhealthy', reasons: ['healthCheck failed: threw: DNS lookup failed'] },
      hangs: { state: 'unhealthy', reasons: ['healthCheck failed: timed out after 500 ms'] },
      'no-check': { state: 'healthy', reasons: [] },
    });
  });

  it('rates every agent unhealthy with "no live worker" when no worker heartbeats', async () => {
    const { monitor } = await setup([{ name: 'a', healthCheck: () => ({ healthy: true }) }, { name: 'b' }], { hasLiveWorker: false });
    const ratings = await monitor.checkAll();
    expect(ratings!.get('a')).toEqual({ state: 'unhealthy', reasons: ['no live worker'] });
    expect(ratings!.get('b')).toEqual({ state: 'unhealthy', reasons: ['no live worker'] });
  });

  it('rates from the recorded runs and the circuit', async () => {
    const { monitor, state, circuit } = await setup([{ name: 'failing', maxRestartsPerHour: 2 }, { name: 'ok' }]);
    for (let i = 0; i < 3; i++) {
      await state.record({ agent: 'failing', outcome: 'failure', durationMs: 5, at: Date.now(), error: 'x' });
      await circuit.record({ agent: 'failing', outcome: 'failure', at: Date.now() }, 2);
    }
    await state.record({ agent: 'ok', outcome: 'success', durationMs: 5, at: Date.now() });
    const ratings = await monitor.checkAll();
    expect(ratings!.get('failing')).toEqual({
      state: 'unhealthy',
      reasons: ['circuit open', '3 consecutive failures', 'success rate 0% over the last 3 runs (under 90%)'],
    });
    expect(ratings!.get('ok')).toEqual({ state: 'healthy', reasons: [] });
  });

  it('does nothing when it may not act (not the leader)', async () => {
    const { monitor, store } = await setup([{ name: 'a' }], { hasLiveWorker: false, canAct: async () => false });
    expect(await monitor.checkAll()).toBeNull();
    expect((await store.getMany(['a'])).get('a')!.state).toBeNull();
  });

  it('skips a dependent of an unhealthy agent, but not of a degraded one or for a stale "no live worker"', async () => {
    const { store, registry, keys, connection } = await setup([
      { name: 'broken' },
      { name: 'slow' },
      { name: 'was-alone' },
      { name: 'uses-was-alone', dependsOn: ['was-alone'] },
      { name: 'uses-broken', dependsOn: ['broken'] },
      { name: 'uses-slow', dependsOn: ['slow'] },
    ]);
    await store.write(
      new Map([
        ['broken', { state: 'unhealthy' as const, reasons: ['3 consecutive failures', 'success rate 0% over the last 3 runs (under 90%)'] }],
        ['slow', { state: 'degraded' as const, reasons: ['p95 9000 ms is over 80% of timeoutMs 10000 ms'] }],
        // Rated while no worker was up: the worker asking is one, so this is stale.
        ['was-alone', { state: 'unhealthy' as const, reasons: ['no live worker'] }],
      ]),
      NOW,
    );
    const rule = dependencyHealthRule();
    const view = new GateCache({ redis: connection, keys });
    await view.load(['broken', 'slow', 'was-alone']);
    const job = { id: '1', data: {} } as Job<RunJobData>;
    expect(rule({ spec: registry.require('uses-broken'), job, view })).toEqual([{ text: 'dependency broken unhealthy: 3 consecutive failures', dependency: 'broken' }]);
    expect(rule({ spec: registry.require('uses-slow'), job, view })).toEqual([]);
    expect(rule({ spec: registry.require('uses-was-alone'), job, view })).toEqual([]);
  });
});
