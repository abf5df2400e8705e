import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Worker, type Telemetry } from 'bullmq';
import { isLostLockError } from '../queues/bullmq-errors.js';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { RunLockLostError, createAgentProcessor, isReported, type ExecutorDeps, type RunResult } from './agent-executor.js';
import type { EventBus } from '../messaging/bus.js';
import type { Keys } from '../redis/keys.js';
import { QUEUE_NAMES, type RunJobData } from '../queues/queues.js';
import { isConnectionError } from '../redis/redis-connection.js';

/**
 * How many times a run may stall (its worker died or froze past its lock) and still be recovered;
 * the next stall dead-letters it (`job stalled more than allowable limit`). BullMQ's default, 1,
 * dead-letters a run caught by two worker crashes although its own code never failed; 2 gives an
 * innocent neighbour of a crashing run room for two crashes, while a run that kills its worker
 * every time (out of memory, a native crash) still ends in the DLQ on its third — the poison-pill
 * rule Sidekiq Pro's super_fetch follows. Stalls spend no attempt. An uncaught exception in an
 * agent does not stall anything: see process-faults.ts.
 */
export const DEFAULT_MAX_STALLED_COUNT = 2;

/** A worker id that says where it runs: `host:pid:random`. */
export function makeWorkerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(2).toString('hex')}`;
}

export interface AgentWorkerOptions extends Omit<ExecutorDeps, 'bullConnection' | 'abortRun'> {
  keys: Keys;
  /** Connection BullMQ uses (and duplicates for its blocking client); run completions ride on it. */
  connection: Redis;
  concurrency: number;
  bus: EventBus;
  log: Logger;
  /**
   * BullMQ `lockDuration` (`LOCK_DURATION_MS`): how long a run's lock lasts without renewal (renewed
   * every half of it). A worker killed mid-run has its runs handed to another worker after at most
   * lockDuration + stalledInterval. An agent that blocks the event loop longer than this loses its
   * lock and is started again elsewhere (the copy that lost it records nothing): keep synchronous
   * work below it.
   */
  lockDurationMs?: number;
  /** BullMQ `stalledInterval` (`STALLED_INTERVAL_MS`): how often this worker looks for stalled runs. */
  stalledIntervalMs?: number;
  /** BullMQ `maxStalledCount` (`MAX_STALLED_COUNT`); default `DEFAULT_MAX_STALLED_COUNT`. */
  maxStalledCount?: number;
  /** Filled with the ids of the runs executing on this worker (for heartbeats and shutdown). */
  activeRuns?: Set<string>;
  /** BullMQ's telemetry (tracing on, tracing.ts): its `process` span around each attempt. */
  telemetry?: Telemetry;
}

/**
 * A BullMQ Worker on the `agents` queue running agents through the executor. Its `name` is the
 * worker id, which BullMQ stores on each job it takes (`processedBy`), so a dead-lettered run names
 * the worker that ran it. Failures the executor did not see (a job that stalled too often) still
 * reach the bus as `agent:dlq` through the `failed` listener.
 */
export function createAgentWorker(options: AgentWorkerOptions): Worker<RunJobData, RunResult> {
  const log = options.log.child({ component: 'agent-worker', workerId: options.workerId });
  let worker: Worker<RunJobData, RunResult> | undefined;
  const processor = createAgentProcessor({
    ...options,
    log,
    bullConnection: options.connection,
    abortRun: (runId, reason) => worker?.cancelJob(runId, reason as unknown as string) ?? false,
  });
  const { activeRuns, runPhases } = options;
  const tracked: typeof processor =
    activeRuns || runPhases
      ? async (job, token, signal) => {
          activeRuns?.add(job.id!);
          try {
            return await processor(job, token, signal);
          } finally {
            activeRuns?.delete(job.id!);
            runPhases?.delete(job.id!);
          }
        }
      : processor;
  worker = new Worker<RunJobData, RunResult>(QUEUE_NAMES.agents, tracked, {
    connection: options.connection,
    prefix: options.keys.bullPrefix,
    concurrency: options.concurrency,
    name: options.workerId,
    ...(options.lockDurationMs !== undefined ? { lockDuration: options.lockDurationMs } : {}),
    ...(options.stalledIntervalMs !== undefined ? { stalledInterval: options.stalledIntervalMs } : {}),
    maxStalledCount: options.maxStalledCount ?? DEFAULT_MAX_STALLED_COUNT,
    ...(options.telemetry ? { telemetry: options.telemetry } : {}),
  });
  worker.on('failed', (job, err) => {
    if (!job || isReported(err)) return;
    const final = job.attemptsMade >= (job.opts.attempts ?? 1) || job.finishedOn !== undefined;
    if (!final) return;
    options.bus
      .publish('agent:dlq', { runId: job.id, error: err.message, attemptsMade: job.attemptsMade, workerId: options.workerId }, job.name)
      .catch((e: unknown) => log.warn({ err: e }, 'could not publish agent:dlq'));
    // Its waiting dependents (same tick or pipeline) skip now instead of at their safety deadline.
    const spec = options.registry.get(job.name);
    if (spec && options.admission) {
      options.admission.finish(spec, job, `dlq:${err.message}`).catch((e: unknown) => log.warn({ err: e }, 'could not mark the run finished'));
    }
  });
  worker.on('error', (err) => {
    if (isConnectionError(err)) return;
    // The run's own log line (lost the lock of run ...) already said why BullMQ could not finish it.
    if (isLostLockError(err)) log.debug({ err }, 'BullMQ could not finish a run whose lock was lost');
    else log.warn({ err }, 'worker error');
  });
  // A lock that could not be renewed (the event loop was blocked longer than lockDuration, or Redis
  // was away that long) may already have been handed to another worker as stalled: stop this copy,
  // which then records nothing (agent-executor.ts), and say so.
  worker.on('lockRenewalFailed', (jobIds: string[]) => {
    for (const jobId of jobIds) {
      log.error(
        { runId: jobId, lockDurationMs: options.lockDurationMs ?? 30000 },
        `lost the lock of run ${jobId}: aborting it here, without recording it; another worker runs it again (keep synchronous work in an agent under LOCK_DURATION_MS)`,
      );
      worker!.cancelJob(jobId, new RunLockLostError(jobId) as unknown as string);
    }
  });
  return worker;
}
