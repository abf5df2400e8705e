import type { JobsOptions, Queue, QueueEvents } from 'bullmq';
import type { HealthCheckResult } from '../agents/agent.js';
import { isWaitTimeoutError } from '../queues/bullmq-errors.js';

/** What came of a check sent to a worker: its answer, an error, or no answer in time. */
export type WorkerCheckOutcome =
  | { kind: 'answered'; result: HealthCheckResult | undefined }
  | { kind: 'error'; message: string }
  /** `wasTaken`: a worker had started the check (it may still answer); otherwise none took it. */
  | { kind: 'timed-out'; wasTaken: boolean };

export interface WorkerCheckJob {
  name: string;
  data: Record<string, unknown>;
  opts: JobsOptions;
  /** How long to wait for the answer. */
  waitMs: number;
}

/**
 * Sends a check (an agent's healthCheck, for the health monitor or the boot) to a worker as a
 * `system` queue job and waits for its answer. A job no worker took in time is removed — it is of
 * no use any more, and a worker arriving later should not run a stale check; one a worker is
 * running is left to finish.
 */
export async function runCheckOnWorker(queue: Queue, events: QueueEvents, { name, data, opts, waitMs }: WorkerCheckJob): Promise<WorkerCheckOutcome> {
  const job = await queue.add(name, data, opts);
  try {
    return { kind: 'answered', result: (await job.waitUntilFinished(events, waitMs)) as HealthCheckResult | undefined };
  } catch (err) {
    if (!isWaitTimeoutError(err)) return { kind: 'error', message: (err as Error).message };
    if ((await job.getState()) === 'active') return { kind: 'timed-out', wasTaken: true };
    await job.remove().catch(() => {});
    return { kind: 'timed-out', wasTaken: false };
  }
}
