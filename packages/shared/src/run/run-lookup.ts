import type { Job, JobState, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { RunNotFoundError } from '../process/errors.js';
import type { RunJobData } from '../queues/queues.js';
import { TRACE_ID_FIELD } from './run-completion.js';
import { traceIdOfMetadata } from '../observability/run-tracing.js';

/** One run as `GET /api/runs/:id` shows it. */
export interface RunView {
  id: string;
  agent: string;
  /** BullMQ's state: waiting, prioritized, delayed, active, completed, failed, waiting-children, unknown. */
  state: JobState | 'unknown';
  trigger: string | null;
  pipelineId: string | null;
  data: unknown;
  attempts: { made: number; started: number; max: number };
  timings: {
    queuedAt: string | null;
    startedAt: string | null;
    finishedAt: string | null;
    /** From the last start to the end, when the run has ended. */
    durationMs: number | null;
  };
  /** What the run returned (success, or skipped with reasons), once completed. */
  result: unknown;
  /** The last failure's message, when an attempt failed. */
  error: string | null;
  stacktrace: string[];
  workerId: string | null;
  /**
   * The OpenTelemetry trace the run is in (tracing on; null otherwise): its last recorded attempt's,
   * else its trigger's (a queued manual or pipeline run). Open it in Jaeger or Tempo by this id.
   */
  traceId: string | null;
}

/** Job ids are BullMQ's: counters, `repeat:<agent>:<tick>`, or custom ids of the same alphabet. */
export const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$/;

/**
 * The state of run `id`, or RunNotFoundError when it is not a job of `queue`. Asked before the job
 * is read, because BullMQ keeps its own keys beside the jobs' (`<queue>:meta`, `:events`, `:id`,
 * `:stalled-check`, `:repeat:<scheduler>`, ...): reading one of those as a job fails with
 * WRONGTYPE, or returns a job that does not exist. A real job is always in one of the state sets
 * or lists; those keys never are.
 */
export async function requireRunState(queue: Queue, id: string): Promise<JobState> {
  if (!RUN_ID_PATTERN.test(id)) throw new RunNotFoundError(id);
  const state = await queue.getJobState(id);
  if (state === 'unknown') throw new RunNotFoundError(id);
  return state;
}

/**
 * Reads one run of the `agents` queue. Throws RunNotFoundError when the job does not exist, or
 * no longer does: completed and failed runs are removed by retention (COMPLETED_RETAIN, DLQ_RETAIN).
 */
export async function lookupRun(queue: Queue<RunJobData>, id: string): Promise<RunView> {
  await requireRunState(queue, id);
  let job = await queue.getJob(id);
  if (!job) throw new RunNotFoundError(id);
  const state = await job.getState();
  if (state === 'unknown') throw new RunNotFoundError(id);
  // The run may have finished between the two reads: then read the job again, so a finished state
  // never comes with the running job's missing result and finish time.
  if ((state === 'completed' || state === 'failed') && job.finishedOn === undefined) {
    job = await queue.getJob(id);
    if (!job) throw new RunNotFoundError(id);
  }
  // BullMQ types its client as its own interface; it is the ioredis connection the queue was given.
  const redis = (await queue.getBackend().client) as unknown as Redis;
  const recordedTraceId = await redis.hget(queue.toKey(id), TRACE_ID_FIELD);
  return toRunView(job, state, recordedTraceId ?? undefined);
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);

/** `recordedTraceId`: the job hash's TRACE_ID_FIELD (run-completion.ts), which BullMQ's Job does not read. */
export function toRunView(job: Job<RunJobData>, state: JobState | 'unknown', recordedTraceId?: string): RunView {
  const hasEnded = job.finishedOn !== undefined && job.finishedOn > 0;
  return {
    id: job.id!,
    agent: job.name,
    state,
    trigger: job.data?.trigger ?? null,
    pipelineId: job.data?.pipelineId ?? null,
    data: job.data?.data ?? null,
    attempts: { made: job.attemptsMade, started: job.attemptsStarted ?? job.attemptsMade, max: job.opts.attempts ?? 1 },
    timings: {
      queuedAt: iso(job.timestamp),
      startedAt: iso(job.processedOn),
      finishedAt: iso(job.finishedOn),
      durationMs: hasEnded && job.processedOn ? job.finishedOn! - job.processedOn : null,
    },
    result: job.returnvalue ?? null,
    error: job.failedReason || null,
    stacktrace: job.stacktrace ?? [],
    workerId: job.processedBy ?? null,
    traceId: recordedTraceId ?? traceIdOfMetadata(job.opts.telemetry?.metadata) ?? null,
  };
}
