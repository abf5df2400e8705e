import { afterEach } from 'vitest';
import type { Job, Worker } from 'bullmq';
import {
  agentToggleRules,
  bootGateRules,
  createLogger,
  createRunAdmission,
  type AgentDefinition,
  type AgentStateStore,
  type BusEvent,
  type Keys,
  type Queues,
  type Registry,
  type RunJobData,
} from '@werkpilot/shared';
import { createAgentCluster, waitFor, type TestRedis } from '@werkpilot/test-support';
import type { Redis } from 'ioredis';

/** Helpers shared by the dependency-execution tests (not a test file: the leading `_`). */

export const log = createLogger({ level: 'silent', name: 'test' });
export const retention = { dlqRetain: 100, completedRetain: 1000 };

export interface DependencyCluster {
  registry: Registry;
  keys: Keys;
  redis: Redis;
  queues: Queues;
  state: AgentStateStore;
  events: BusEvent[];
  /** A worker as a separate process would run it: own connection, the gate and run admission. */
  startWorker(options?: { concurrency?: number; id?: string }): Promise<Worker>;
  /** Waits until run `runId` completed and returns its job, read after the completion. */
  completedRun(runId: string, what?: string): Promise<Job<RunJobData>>;
  /** Adds runs with the ids a job scheduler gives one tick (`repeat:<agent>:<tick>`). */
  addTick(tick: number, agents: string[]): Promise<void>;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
});

export function onCleanup(fn: () => Promise<unknown>): void {
  cleanups.push(fn);
}

export async function dependencyCluster(testRedis: TestRedis, agents: Partial<AgentDefinition>[]): Promise<DependencyCluster> {
  const cluster = await createAgentCluster(testRedis, agents, { log });
  cleanups.push(() => cluster.close());
  const { registry, keys, redis, queues, state, events } = cluster;
  return {
    registry,
    keys,
    redis,
    queues,
    state,
    events,
    startWorker: ({ concurrency = 1, id = 'worker-1' } = {}) =>
      cluster.startWorker({
        id,
        concurrency,
        wire: (own) => {
          // A safety re-check far beyond any test: a lost promotion would hang the test, not hide.
          const admission = createRunAdmission({ redis: own, keys, log, recheckMs: 10 * 60_000, rules: [...agentToggleRules(), ...bootGateRules()] });
          return { admission, cleanup: () => admission.close() };
        },
      }),
    // The state is read before the job: a job read first may be a snapshot from before it finished.
    completedRun: (runId, what = `run ${runId} to complete`) =>
      waitFor(async () => ((await queues.agents.getJobState(runId)) === 'completed' ? queues.agents.getJob(runId) : undefined), { what }),
    async addTick(tick, names) {
      await queues.agents.addBulk(
        names.map((name) => {
          const spec = registry.require(name);
          return {
            name,
            data: { agent: name, trigger: 'cron' as const },
            opts: { jobId: `repeat:${name}:${tick}`, priority: spec.priority, attempts: spec.retry.attempts, backoff: { type: 'exponential', delay: spec.retry.backoff.delayMs } },
          };
        }),
      );
    },
  };
}

export { sleep } from '@werkpilot/test-support';
