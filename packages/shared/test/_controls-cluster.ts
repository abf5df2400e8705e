import { afterEach } from 'vitest';
import type { Job } from 'bullmq';
import {
  AgentStateStore,
  EventBus,
  buildRegistry,
  createKeys,
  createLogger,
  createQueues,
  createWorkerRuntime,
  type AgentDefinition,
  type BusEvent,
  type Keys,
  type LimiterDefinition,
  type Queues,
  type Registry,
  type RunJobData,
  type WorkerRuntime,
} from '@werkpilot/shared';
import { uniquePrefix, waitFor, type TestRedis } from '@werkpilot/test-support';
import type { Redis } from 'ioredis';

/**
 * Helpers for the fleet-control tests (not a test file: the leading `_`): workers wired exactly as
 * the worker app wires them (createWorkerRuntime: admission with limiters, catch-up and cancels,
 * completion, `ctx.limit`), each on connections of its own, as separate processes would be.
 */

export const log = createLogger({ level: 'silent', name: 'test' });
export const retention = { dlqRetain: 100, completedRetain: 1000 };

export interface ControlsCluster {
  registry: Registry;
  keys: Keys;
  redis: Redis;
  queues: Queues;
  state: AgentStateStore;
  events: BusEvent[];
  startWorker(options?: { concurrency?: number; id?: string; lockDurationMs?: number }): Promise<WorkerRuntime>;
  /** Waits until run `runId` completed and returns its job, read after the completion. */
  completedRun(runId: string, what?: string): Promise<Job<RunJobData>>;
  /** Events of `type` (and `agent`) seen so far. */
  eventsOf(type: string, agent?: string): BusEvent[];
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

export async function controlsCluster(testRedis: TestRedis, agents: Partial<AgentDefinition>[], limiters: LimiterDefinition[] = []): Promise<ControlsCluster> {
  const registry = buildRegistry([
    ...agents.map((a) => ({ definition: { run: async () => null, ...a }, source: `/t/${a.name}.ts` })),
    ...limiters.map((l) => ({ definition: { ...l, kind: 'limiter' }, source: `/t/${l.name}.ts` })),
  ]);
  const keys = createKeys(uniquePrefix());
  const redis = testRedis.client();
  const queues = createQueues({ connection: redis, keys });
  const state = new AgentStateStore({ redis, keys });
  const bus = new EventBus({ redis, keys, log });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  cleanups.push(
    () => queues.close(),
    () => bus.close(),
  );
  return {
    registry,
    keys,
    redis,
    queues,
    state,
    events,
    async startWorker({ concurrency = 1, id = 'worker-1', lockDurationMs = 30_000 } = {}) {
      const own = testRedis.client();
      const bullConnection = testRedis.client();
      const ownBus = new EventBus({ redis: own, keys, log });
      const runtime = createWorkerRuntime({
        redis: own,
        bullConnection,
        keys,
        registry,
        log,
        workerId: id,
        concurrency,
        bus: ownBus,
        state: new AgentStateStore({ redis: own, keys }),
        lockDurationMs,
        stalledIntervalMs: 30_000,
        retention,
      });
      const closeServices = await runtime.startServices();
      // Popped in reverse: the worker closes before what it uses.
      cleanups.push(
        () => ownBus.close(),
        () => runtime.admission.close(),
        closeServices,
        () => runtime.worker.close(),
      );
      await runtime.worker.waitUntilReady();
      return runtime;
    },
    completedRun: (runId, what = `run ${runId} to complete`) =>
      waitFor(async () => ((await queues.agents.getJobState(runId)) === 'completed' ? queues.agents.getJob(runId) : undefined), { what }),
    eventsOf: (type, agent) => events.filter((e) => e.type === type && (agent === undefined || e.agent === agent)),
  };
}

export { sleep } from '@werkpilot/test-support';
