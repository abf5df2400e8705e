import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Keys } from '../redis/keys.js';
import { QUEUE_NAMES } from './queues.js';
import { isConnectionError } from '../redis/redis-connection.js';

/** Handles one kind of internal job (boot checks, health checks, nightly optimisation, ...). */
export type SystemJobHandler = (job: Job, signal: AbortSignal | undefined) => Promise<unknown>;

export interface SystemWorkerOptions {
  connection: Redis;
  keys: Keys;
  log: Logger;
  workerId: string;
  /** Handlers by job name. A job with no handler fails unrecoverably, naming the job. */
  handlers: Record<string, SystemJobHandler>;
  concurrency?: number;
  /** Filled with the ids of the jobs executing on this worker (for shutdown). */
  activeJobs?: Set<string>;
}

/**
 * A BullMQ Worker on the `system` queue. Internal jobs live on their own queue so a backlog of
 * agent runs never delays a boot or health check.
 */
export function createSystemWorker({ connection, keys, log, workerId, handlers, concurrency = 5, activeJobs = new Set() }: SystemWorkerOptions): Worker {
  const scoped = log.child({ component: 'system-worker', workerId });
  const worker = new Worker(
    QUEUE_NAMES.system,
    async (job, _token, signal) => {
      const handler = handlers[job.name];
      if (!handler) throw new UnrecoverableError(`unknown system job ${job.name}`);
      activeJobs.add(job.id!);
      try {
        return await handler(job, signal);
      } finally {
        activeJobs.delete(job.id!);
      }
    },
    { connection, prefix: keys.bullPrefix, concurrency, name: workerId },
  );
  worker.on('error', (err) => {
    if (!isConnectionError(err)) scoped.warn({ err }, 'system worker error');
  });
  return worker;
}
