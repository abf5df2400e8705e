/**
 * Cancelling a run from any process (API `POST /api/runs/:id/cancel`, CLI `cancel <runId>`).
 *
 * - A queued, prioritised or delayed run is removed from the queue; event `agent:cancelled`.
 * - A running run: only the worker running it can abort it (BullMQ's `Worker.cancelJob` acts in
 *   its own process), so the request is broadcast on the control channel `<prefix>:control:cancel`;
 *   every worker's RunCancelListener tries `cancelJob(runId, RunCancelledError)` and the one that
 *   holds the run pushes its worker id onto a short-lived ack list the caller BLPOPs. The run's
 *   AbortSignal fires with the RunCancelledError; the executor records it as failed with
 *   `cancelled: <reason>`, publishes `agent:cancelled` and BullMQ does not retry it (it is an
 *   UnrecoverableError).
 * - Unknown run: RunNotFoundError; completed or failed: RunFinishedError. An active run whose
 *   worker does not answer in time (it died; BullMQ's stalled check will hand the run to another
 *   worker) is a RunCancelTimeoutError, and nothing changed.
 */
import { randomBytes } from 'node:crypto';
import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { EventBus } from './bus.js';
import { InvalidInputError, RunFinishedError, RunNotFoundError, WerkpilotError } from './errors.js';
import type { Keys } from './keys.js';
import type { RunJobData } from './queues.js';

/**
 * The reason a cancelled run's AbortSignal carries. An UnrecoverableError, so BullMQ fails the run
 * at once without retrying it; its message is what the DLQ shows: `cancelled: <reason>`.
 */
export class RunCancelledError extends UnrecoverableError {
  constructor(readonly reason: string) {
    super(`cancelled: ${reason}`);
  }
}

/** No worker confirmed that it aborted a running run. */
export class RunCancelTimeoutError extends WerkpilotError {
  constructor(
    readonly runId: string,
    readonly timeoutMs: number,
  ) {
    super(
      `no worker confirmed cancelling run ${runId} within ${timeoutMs} ms; the worker running it may have died ` +
        '(BullMQ will hand the run to another worker once it stalls): try again',
    );
  }
}

/** The control channel (not a key) on which cancel requests reach every worker. */
export function cancelChannel(keys: Keys): string {
  return `${keys.prefix}:control:cancel`;
}

const QUEUED_STATES = new Set(['waiting', 'wait', 'prioritized', 'delayed', 'waiting-children']);
const MAX_REASON_LENGTH = 500;
const ACK_TTL_SECONDS = 60;

interface CancelMessage {
  runId: string;
  reason: string;
  ackKey: string;
}

export interface CancelRunDeps {
  queue: Queue<RunJobData>;
  /** Command connection; duplicated for the short blocking wait on the worker's acknowledgement. */
  redis: Redis;
  keys: Keys;
  bus: EventBus;
  /** How long to wait for the worker running the run to confirm. Default 5000. */
  ackTimeoutMs?: number;
}

export type CancelRunResult =
  | { runId: string; agent: string; outcome: 'removed'; state: string }
  | { runId: string; agent: string; outcome: 'aborted'; workerId: string };

/**
 * Cancels run `runId` with `reason`: removes it when it is queued, aborts it on whichever worker
 * runs it when it is active. Throws RunNotFoundError, RunFinishedError, RunCancelTimeoutError or
 * InvalidInputError (bad id or reason).
 */
export async function cancelRun(deps: CancelRunDeps, runId: string, reason = 'cancelled by operator'): Promise<CancelRunResult> {
  if (typeof runId !== 'string' || runId.length === 0) throw new InvalidInputError('cancel: a run id is required');
  if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > MAX_REASON_LENGTH) {
    throw new InvalidInputError(`cancel: reason must be a non-empty string of at most ${MAX_REASON_LENGTH} characters`);
  }
  const job = await deps.queue.getJob(runId);
  if (!job) throw new RunNotFoundError(runId);
  const state = await job.getState();
  if (state === 'completed' || state === 'failed') throw new RunFinishedError(runId, state);
  if (state === 'unknown') throw new RunNotFoundError(runId);

  if (QUEUED_STATES.has(state)) {
    const removed = await tryRemove(job);
    if (removed) {
      await deps.bus.publish('agent:cancelled', { runId, reason, state }, job.name);
      return { runId, agent: job.name, outcome: 'removed', state };
    }
    // It became active between the state read and the removal: abort it where it runs.
  }
  const workerId = await abortOnOwningWorker(deps, runId, reason);
  return { runId, agent: job.name, outcome: 'aborted', workerId };
}

/** Removes a job that is not locked; false when a worker took it meanwhile. */
async function tryRemove(job: Job<RunJobData>): Promise<boolean> {
  try {
    await job.remove();
    return true;
  } catch (err) {
    const message = (err as Error).message;
    if (/locked/.test(message)) return false;
    if (/job scheduler/i.test(message)) {
      throw new InvalidInputError(
        `run ${job.id} is the next scheduled tick of agent ${job.name} and cannot be cancelled; disable the agent to stop its schedule`,
      );
    }
    throw err;
  }
}

async function abortOnOwningWorker(deps: CancelRunDeps, runId: string, reason: string): Promise<string> {
  const timeoutMs = deps.ackTimeoutMs ?? 5000;
  const ackKey = deps.keys.key('cancel', randomBytes(8).toString('hex'), 'ack');
  // The wait blocks a connection, so it gets its own; cancels are rare operator actions.
  const waiter = deps.redis.duplicate({ connectionName: `${deps.redis.options.connectionName ?? 'werkpilot'}:cancel-ack` });
  waiter.on('error', () => {});
  try {
    const message: CancelMessage = { runId, reason, ackKey };
    await deps.redis.publish(cancelChannel(deps.keys), JSON.stringify(message));
    const ack = await waiter.blpop(ackKey, timeoutMs / 1000);
    if (!ack) throw new RunCancelTimeoutError(runId, timeoutMs);
    return ack[1];
  } finally {
    waiter.disconnect();
    await deps.redis.del(ackKey).catch(() => undefined);
  }
}

/** What a cancel listener needs of a BullMQ Worker. */
export interface CancellableWorker {
  cancelJob(jobId: string, reason?: string): boolean;
}

export interface RunCancelListenerOptions {
  /** Command connection (for the ack); duplicated for the control-channel subscription. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  worker: CancellableWorker;
  workerId: string;
}

export interface RunCancelListener {
  close(): Promise<void>;
}

/**
 * Listens for cancel requests and aborts the named run when this worker is running it.
 * Resolves once subscribed, so a cancel sent afterwards is never missed.
 */
export async function startRunCancelListener(options: RunCancelListenerOptions): Promise<RunCancelListener> {
  const { redis, keys, worker, workerId } = options;
  const log = options.log.child({ component: 'run-cancel', workerId });
  const subscriber = redis.duplicate({ connectionName: `${redis.options.connectionName ?? 'werkpilot'}:cancel-sub` });
  subscriber.on('error', () => {});
  subscriber.on('message', (_channel: string, raw: string) => {
    let message: CancelMessage;
    try {
      message = JSON.parse(raw) as CancelMessage;
    } catch {
      return;
    }
    // BullMQ hands `reason` to AbortController.abort unchanged; an Error tells the executor why.
    const cancelled = worker.cancelJob(message.runId, new RunCancelledError(message.reason) as unknown as string);
    if (!cancelled) return;
    log.info({ runId: message.runId, reason: message.reason }, 'run cancelled');
    redis
      .multi()
      .rpush(message.ackKey, workerId)
      .expire(message.ackKey, ACK_TTL_SECONDS)
      .exec()
      .catch((err: unknown) => log.warn({ err }, 'could not acknowledge a cancel'));
  });
  await subscriber.subscribe(cancelChannel(keys));
  return {
    close: async () => {
      await subscriber.quit().catch(() => subscriber.disconnect());
    },
  };
}
