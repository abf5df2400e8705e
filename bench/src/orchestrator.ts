import type { Worker } from 'bullmq';
import { pino, type Logger } from 'pino';
import {
  AgentStateStore,
  EventBus,
  buildRegistry,
  createAgentWorker,
  createKeys,
  createQueues,
  createRedisConnection,
  defineAgent,
  type AgentDefinition,
  type Keys,
  type Queues,
  type Redis,
  type Registry,
  type RunResult,
  type RunJobData,
} from '@werkpilot/shared';

/** Retention as the apps default it (DLQ_RETAIN, COMPLETED_RETAIN). */
export const RETENTION = { dlqRetain: 100, completedRetain: 1000 };

/**
 * A logger like the apps' (pino at `info`, JSON) whose lines go nowhere: the bench pays for
 * building log lines exactly as production does, without printing them over the table.
 */
export function silentLogger(name: string): Logger {
  return pino({ level: 'info', name }, pino.destination({ dest: '/dev/null', sync: false }));
}

/** A registry of in-memory agents (no module files), validated as the apps validate theirs. */
export function registryOf(definitions: AgentDefinition[]): Registry {
  return buildRegistry(definitions.map((definition, i) => ({ definition, source: `bench-agent-${i}.ts` })));
}

/** An agent that does nothing: what every run costs beyond the agent's own work. */
export function noOpAgent(name: string, extra: Partial<AgentDefinition> = {}): AgentDefinition {
  return defineAgent({ name, run: async () => null, ...extra });
}

/** One orchestrator worker process's parts, built as `apps/worker/src/main.ts` builds them. */
export interface OrchestratorWorker {
  worker: Worker<RunJobData, RunResult>;
  close(): Promise<void>;
}

/**
 * The full worker path: registry, executor with the gates and outcome listeners the worker app
 * wires, agent state (counters, percentiles), bus events. Mirrors `apps/worker/src/main.ts`; when
 * that wiring changes, this must follow it, or the bench measures a path nobody runs.
 */
export async function startOrchestratorWorker({
  url,
  prefix,
  registry,
  concurrency,
}: {
  url: string;
  prefix: string;
  registry: Registry;
  concurrency: number;
}): Promise<OrchestratorWorker> {
  const log = silentLogger('worker');
  const keys = createKeys(prefix);
  const redis = createRedisConnection({ url, role: 'worker', log });
  const bus = new EventBus({ redis, keys, log });
  const state = new AgentStateStore({ redis, keys });
  const worker = createAgentWorker({
    connection: redis,
    redis,
    keys,
    registry,
    state,
    bus,
    log,
    workerId: `bench-worker-${Math.random().toString(16).slice(2, 6)}`,
    concurrency,
  });
  await worker.waitUntilReady();
  return {
    worker,
    close: async () => {
      await worker.close();
      await bus.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** The scheduler side: the queues on their own connection, as the scheduler (or API) enqueues. */
export function openOrchestratorQueues(url: string, prefix: string): { keys: Keys; queues: Queues; redis: Redis; close(): Promise<void> } {
  const log = silentLogger('scheduler');
  const keys = createKeys(prefix);
  const redis = createRedisConnection({ url, role: 'scheduler', log });
  const queues = createQueues({ connection: redis, keys });
  return {
    keys,
    queues,
    redis,
    close: async () => {
      await queues.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
