import type { Job, Queue } from 'bullmq';
import { RunNotFoundError } from '../process/errors.js';
import type { RunJobData } from './queues.js';
import { requireRunState } from '../run/run-lookup.js';
import { listRunIds, readRunSummaries, type RunSummary, type TruncatedField } from '../run/run-summaries.js';

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
  /** In lists only: which of data, error and stacktrace hold only their beginning (run-summaries.ts). */
  truncated?: TruncatedField[];
  /** In lists only: size in bytes of the run's stored data. */
  dataBytes?: number;
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

  /**
   * Newest first. Entries carry at most the first 2 KiB of each run's input, error and stack trace
   * (`truncated` names what was cut), so a page costs kilobytes whatever the runs' inputs weigh;
   * `get` reads one run in full.
   */
  async list(offset = 0, limit = 20): Promise<DeadLetterEntry[]> {
    if (limit <= 0) return [];
    const runs = await listRunIds(this.queue, [{ state: 'failed', from: offset, to: offset + limit - 1 }]);
    return (await readRunSummaries(this.queue, runs)).map(summaryToEntry);
  }

  /** The named runs as `list` shows them, in the order given; runs that are gone are left out. */
  async entries(ids: readonly string[]): Promise<DeadLetterEntry[]> {
    return (
      await readRunSummaries(
        this.queue,
        ids.map((id) => ({ id, state: 'failed' as const })),
      )
    ).map(summaryToEntry);
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
    // The state first: an id naming one of BullMQ's own keys is no job (see requireRunState).
    if ((await requireRunState(this.queue, id)) !== 'failed') throw new RunNotFoundError(id);
    const job = await this.queue.getJob(id);
    if (!job || !(await job.isFailed())) throw new RunNotFoundError(id);
    return job;
  }
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

function summaryToEntry(s: RunSummary): DeadLetterEntry {
  return {
    id: s.id,
    agent: s.agent,
    error: s.error ?? 'unknown error',
    stacktrace: s.stacktrace,
    data: s.data,
    trigger: s.trigger ?? undefined,
    pipelineId: s.pipelineId ?? undefined,
    attemptsMade: s.attempts.made,
    queuedAt: s.timings.queuedAt,
    startedAt: s.timings.startedAt,
    failedAt: s.timings.finishedAt,
    workerId: s.workerId,
    truncated: s.truncated.filter((f) => f !== 'result'),
    dataBytes: s.dataBytes,
  };
}

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
