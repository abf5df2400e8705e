import type { Redis } from 'ioredis';
import {
  AgentStateStore,
  EventBus,
  buildRegistry,
  createAgentWorker,
  createKeys,
  createLogger,
  createQueues,
  type AgentDefinition,
  type AgentWorkerOptions,
  type BusEvent,
  type Keys,
  type Logger,
  type Queues,
  type Registry,
} from '@werkpilot/shared';
import type { TestRedis } from './redis-harness.js';
import { uniquePrefix } from './redis-harness.js';

export type AgentWorker = ReturnType<typeof createAgentWorker>;

/** What a test adds to a worker it starts (gates, listeners, admission, ...), given the worker's own connection. */
export type WorkerWiring = (own: Redis, keys: Keys) => Partial<AgentWorkerOptions> & { cleanup?: () => Promise<unknown> };

/** A registry of in-memory agents, both queues, state, and a bus recording every event — on a fresh prefix. */
export interface AgentCluster {
  registry: Registry;
  keys: Keys;
  /** The cluster's own connection (queues, state, bus). */
  redis: Redis;
  queues: Queues;
  state: AgentStateStore;
  bus: EventBus;
  /** Every bus event since the cluster started, in order. */
  events: BusEvent[];
  /** A worker as a separate process would run it: its own connection, plus what `wire` adds. */
  startWorker(options?: { id?: string; concurrency?: number; wire?: WorkerWiring }): Promise<AgentWorker>;
  /** Closes every worker, queue and bus it opened (workers first). */
  close(): Promise<void>;
}

/**
 * Builds an AgentCluster on the test file's Redis. Agents get a no-op `run` unless they bring one;
 * call `close()` after each test (e.g. in `afterEach`).
 */
export async function createAgentCluster(
  testRedis: TestRedis,
  agents: Partial<AgentDefinition>[],
  { log = createLogger({ level: 'silent', name: 'test' }), keys = createKeys(uniquePrefix()) }: { log?: Logger; keys?: Keys } = {},
): Promise<AgentCluster> {
  const registry = buildRegistry(agents.map((a) => ({ definition: { run: async () => null, ...a }, source: `/t/${a.name}.ts` })));
  const redis = testRedis.client();
  const queues = createQueues({ connection: redis, keys });
  const state = new AgentStateStore({ redis, keys });
  const bus = new EventBus({ redis, keys, log });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  const cleanups: (() => Promise<unknown>)[] = [() => queues.close(), () => bus.close()];
  return {
    registry,
    keys,
    redis,
    queues,
    state,
    bus,
    events,
    async startWorker({ id = 'worker-1', concurrency = 1, wire } = {}) {
      const own = testRedis.client();
      const { cleanup, ...extra } = wire?.(own, keys) ?? {};
      const worker = createAgentWorker({
        connection: own,
        redis: own,
        keys,
        registry,
        bus: new EventBus({ redis: own, keys, log }),
        log,
        workerId: id,
        concurrency,
        ...extra,
      });
      // Popped in reverse: the worker closes before what it uses.
      if (cleanup) cleanups.push(cleanup);
      cleanups.push(() => worker.close());
      await worker.waitUntilReady();
      return worker;
    },
    async close() {
      while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
    },
  };
}
