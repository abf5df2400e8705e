import { Queue, type JobsOptions, type Telemetry } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import type { Keys } from '../redis/keys.js';

/** The `agents` queue carries every agent run; `system` carries internal jobs so they never starve. */
export const QUEUE_NAMES = { agents: 'agents', system: 'system' } as const;

/** What triggered a run. */
export type RunTrigger = 'cron' | 'manual' | 'pipeline' | 'retry' | 'catch-up' | 'backfill';

/** The data of an `agents` job. The job's name is the agent's name. */
export interface RunJobData {
  agent: string;
  trigger: RunTrigger;
  /** The run's input, given to `ctx.data`. */
  data?: unknown;
  /** Set on every run of a pipeline (`withDependents`). */
  pipelineId?: string;
  /** Fingerprint of the job scheduler template that made a cron run (reconcile compares it). */
  schedulerHash?: string;
  /** The tick a catch-up or backfilled run stands for (ms); a cron run's is in its id. See `ctx.scheduledAt`. */
  scheduledAt?: number;
  /** The run this one waits for, whatever its outcome, before it starts: the previous tick of a chain. */
  after?: string;
}

export interface Retention {
  /** Failed runs kept per queue: the dead-letter queue's size. */
  dlqRetain: number;
  /** Completed runs kept per queue, for Bull Board. */
  completedRetain: number;
}

export interface Queues {
  agents: Queue<RunJobData>;
  system: Queue;
  close(): Promise<void>;
}

/**
 * Both queues on one shared connection (BullMQ duplicates what it needs for blocking calls). With
 * `telemetry` (tracing on), enqueuing a run opens BullMQ's `add` span and carries the caller's trace
 * context to the worker in the job's options; the `system` queue's internal jobs are not traced.
 */
export function createQueues({ connection, keys, telemetry }: { connection: Redis; keys: Keys; telemetry?: Telemetry | undefined }): Queues {
  const agents = new Queue<RunJobData>(QUEUE_NAMES.agents, { connection, prefix: keys.bullPrefix, ...(telemetry ? { telemetry } : {}) });
  const system = new Queue(QUEUE_NAMES.system, { connection, prefix: keys.bullPrefix });
  // A Queue re-emits connection errors; the connection itself logs them once per outage.
  agents.on('error', () => {});
  system.on('error', () => {});
  return {
    agents,
    system,
    close: async () => {
      await Promise.all([agents.close(), system.close()]);
    },
  };
}

/**
 * BullMQ options for a run of `spec`: its priority (1 highest; FIFO within a priority), its retry
 * policy ("auto-restart") and retention. The failed set is the dead-letter queue, capped at
 * `dlqRetain` per queue as the predecessor kept the last 100 failures.
 */
export function runJobOptions(spec: AgentSpec, retention: Retention): JobsOptions {
  return {
    priority: spec.priority,
    attempts: spec.retry.attempts,
    backoff: { type: 'exponential', delay: spec.retry.backoff.delayMs },
    removeOnComplete: { count: retention.completedRetain },
    removeOnFail: { count: retention.dlqRetain },
  };
}
