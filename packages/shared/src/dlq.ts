import type { Job, Queue } from 'bullmq';
import { RunNotFoundError } from './errors.js';
import type { RunJobData } from './queues.js';

/** One dead-lettered run, with its error and the context it ran in. */
export interface DeadLetterEntry {
  id: string;
  agent: string;
  error: string;
  stacktrace: string[];
  data: unknown;
  trigger: string | undefined;
  pipelineId: string | undefined;
  attemptsMade: number;
  /** When the run was queued / last started / failed for good (ISO-8601). */
  queuedAt: string | null;
  startedAt: string | null;
  failedAt: string | null;
  workerId: string | null;
}

/**
 * The dead-letter queue is BullMQ's failed set of the `agents` queue: runs that exhausted their
 * attempts (or failed unrecoverably) stay there, capped by `removeOnFail: { count: DLQ_RETAIN }`.
 * This class reads and operates on it; it holds no state of its own.
 */
export class DeadLetterQueue {
  constructor(private readonly queue: Queue<RunJobData>) {}

  size(): Promise<number> {
    return this.queue.getFailedCount();
  }

  /** Newest first. */
  async list(offset = 0, limit = 20): Promise<DeadLetterEntry[]> {
    if (limit <= 0) return [];
    const jobs = await this.queue.getFailed(offset, offset + limit - 1);
    return jobs.filter((j): j is Job<RunJobData> => Boolean(j)).map(toEntry);
  }

  async get(id: string): Promise<DeadLetterEntry> {
    return toEntry(await this.requireFailed(id));
  }

  /** Moves one dead-lettered run back to the queue with fresh attempts. */
  async retry(id: string): Promise<void> {
    const job = await this.requireFailed(id);
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
  }

  /** Moves every dead-lettered run back to the queue; returns how many. */
  async retryAll(): Promise<number> {
    const count = await this.size();
    await this.queue.retryJobs({ state: 'failed', count: 1000 });
    return count;
  }

  async remove(id: string): Promise<void> {
    const job = await this.requireFailed(id);
    await job.remove();
  }

  /** Deletes every dead-lettered run; returns how many. */
  async purge(): Promise<number> {
    const removed = await this.queue.clean(0, 0, 'failed');
    return removed.length;
  }

  private async requireFailed(id: string): Promise<Job<RunJobData>> {
    const job = await this.queue.getJob(id);
    if (!job || !(await job.isFailed())) throw new RunNotFoundError(id);
    return job;
  }
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

export function toEntry(job: Job<RunJobData>): DeadLetterEntry {
  return {
    id: job.id!,
    agent: job.name,
    error: job.failedReason ?? 'unknown error',
    stacktrace: job.stacktrace ?? [],
    data: job.data?.data ?? null,
    trigger: job.data?.trigger,
    pipelineId: job.data?.pipelineId,
    attemptsMade: job.attemptsMade,
    queuedAt: iso(job.timestamp),
    startedAt: iso(job.processedOn),
    failedAt: iso(job.finishedOn),
    workerId: job.processedBy ?? null,
  };
}
