import { UnrecoverableError, WaitingError, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentContext, AgentSpec, TopicHandler } from './agent.js';
import { createRunLogger } from './agent-logger.js';
import type { AgentStateStore, RunRecord } from './agent-state.js';
import { publishAgentMessage, type BusEvent, type EventBus } from './bus.js';
import { RunTimeoutError } from './errors.js';
import { RunCancelledError } from './run-cancel.js';
import { isDependencyReason, type RunGate } from './gating.js';
import type { FinishedOutcome } from './dependency-waits.js';
import { gateAndAdmit, type RunAdmission } from './run-admission.js';
import type { RunJobData } from './queues.js';
import { execOrThrow } from './redis-pipeline.js';
import { isShutdownAbort } from './shutdown.js';
import { runInScope } from './process-faults.js';
import { MAX_ERROR_MESSAGE_BYTES, capError, truncateBytes } from './size-limits.js';
import type { Registry } from './registry.js';

/** What a finished `agents` job returns (visible in Bull Board and `GET /api/runs/:id`). */
export type RunResult =
  | { outcome: 'success'; result: unknown; durationMs: number; workerId: string }
  | { outcome: 'skipped'; reasons: string[]; workerId: string };

/** The gate (see gating.ts): the reasons to skip a run, empty to run it. */
export type { RunGate } from './gating.js';

/** Called with every recorded run, to add more state changes to the same round trip. */
export type OutcomeListener = (record: RunRecord, pipeline: ReturnType<Redis['pipeline']>) => void;

export interface ExecutorDeps {
  redis: Redis;
  registry: Registry;
  state: AgentStateStore;
  bus: EventBus;
  log: Logger;
  workerId: string;
  gates?: RunGate[];
  outcomeListeners?: OutcomeListener[];
  /** Serves `ctx.request`; without it, requests reject with a clear error. */
  request?: AgentRequester;
  clock?: () => number;
  /** Dependency waits and the overlap lease (run-admission.ts); without it runs start at once. */
  admission?: RunAdmission;
  /**
   * Whether this worker hands a run back to the queue untouched (no attempt spent) instead of
   * running it: a reason, or undefined to run it. The memory monitor sheds priority-3 runs here.
   */
  handBack?: (spec: AgentSpec, job: Job<RunJobData>) => string | undefined;
}

/** How long a slot rests after handing a run back, so a worker under pressure does not spin on it. */
const HAND_BACK_PAUSE_MS = 250;

export type AgentRequester = (from: string, agent: string, payload: unknown, options?: { timeoutMs?: number }) => Promise<unknown>;

/** Marks an error whose events and state the processor already recorded. */
const REPORTED = Symbol('werkpilot.reported');

export function isReported(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[REPORTED] === true;
}

/**
 * The processor of the `agents` queue: resolves the agent named by the job, gates it, runs it with
 * its context and timeout, and records the outcome — state and events in one round trip.
 *
 * Failures are thrown back to BullMQ, which retries with the agent's exponential backoff; a run that
 * exhausts its attempts stays in the failed set, which is the dead-letter queue.
 */
export function createAgentProcessor(deps: ExecutorDeps): Processor<RunJobData, RunResult> {
  const clock = deps.clock ?? Date.now;
  const gates = deps.gates ?? [];
  const listeners = deps.outcomeListeners ?? [];

  /** `finished`: the run ended for good; it is marked so in the same round trip and its waiting dependents promoted. */
  const commit = async (record: RunRecord, events: BusEvent[], finished?: { spec: AgentSpec; job: Job<RunJobData>; outcome: FinishedOutcome }) => {
    const pipeline = deps.redis.pipeline();
    deps.state.addRecordTo(pipeline, record);
    for (const listener of listeners) listener(record, pipeline);
    for (const event of events) deps.bus.addTo(pipeline, event);
    const promoteWaiting = finished && deps.admission?.addFinishTo(pipeline, finished.spec, finished.job, finished.outcome);
    const replies = await execOrThrow(pipeline);
    await promoteWaiting?.(replies);
  };

  return async (job, token, bullSignal) => {
    const spec = deps.registry.get(job.name);
    if (!spec) {
      const reason = `unknown agent ${job.name}`;
      await deps.bus.publish('agent:dlq', { runId: job.id, error: reason, workerId: deps.workerId }, job.name);
      throw markReported(new UnrecoverableError(reason));
    }
    const attempt = job.attemptsMade + 1;
    const base = { runId: job.id!, attempt, workerId: deps.workerId, ...(job.data.pipelineId ? { pipelineId: job.data.pipelineId } : {}) };
    const log = deps.log.child({ agent: spec.name, runId: job.id, attempt });

    const handBackReason = token ? deps.handBack?.(spec, job) : undefined;
    if (handBackReason) {
      await job.moveToWait(token);
      log.info({ reason: handBackReason }, 'run handed back to the queue');
      await new Promise((resolve) => setTimeout(resolve, HAND_BACK_PAUSE_MS));
      throw new WaitingError();
    }

    // Parks the job (throws DelayedError) while dependency runs of its tick or pipeline are pending.
    const reasons = await gateAndAdmit(gates, deps.admission, spec, job, token);
    if (reasons.length > 0) {
      const dependencyReasons = reasons.filter(isDependencyReason);
      await commit({ agent: spec.name, runId: job.id, outcome: 'skipped', at: clock(), error: reasons.join('; ') }, [
        ...(dependencyReasons.length > 0 ? [deps.bus.event('dependency:unhealthy', { ...base, reasons: dependencyReasons }, spec.name)] : []),
        deps.bus.event('agent:skipped', { ...base, reasons }, spec.name),
      ], { spec, job, outcome: `skipped:${reasons.join('; ')}` });
      log.info({ reasons }, 'run skipped');
      return { outcome: 'skipped', reasons, workerId: deps.workerId };
    }

    const startedAt = clock();
    // Not awaited: the run need not wait a round trip for its own announcement, and commands on one
    // connection are delivered in order, so `agent:started` still precedes the run's outcome event.
    deps.bus.publish('agent:started', { ...base, trigger: job.data.trigger }, spec.name).catch((err: unknown) => log.warn({ err }, 'could not publish agent:started'));

    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new RunTimeoutError(spec.timeoutMs)), spec.timeoutMs);
    const signal = bullSignal ? AbortSignal.any([timeout.signal, bullSignal]) : timeout.signal;
    const subscriptions: (() => void)[] = [];
    const ctx = buildContext(deps, spec, job, attempt, signal, log, subscriptions);

    try {
      // The scope attributes faults the run's code leaves behind (an unawaited rejection, a throw in
      // a timer) to this agent and run; see process-faults.ts.
      const scope = { agent: spec.name, runId: job.id!, attempt, activity: 'run' as const };
      const result = await untilAborted(Promise.resolve().then(() => runInScope(scope, () => spec.definition.run(ctx))), signal);
      const durationMs = clock() - startedAt;
      await commit({ agent: spec.name, runId: job.id, outcome: 'success', durationMs, at: clock(), attempt }, [
        deps.bus.event('agent:completed', { ...base, durationMs }, spec.name),
      ], { spec, job, outcome: 'ok' });
      return { outcome: 'success', result: result ?? null, durationMs, workerId: deps.workerId };
    } catch (thrown) {
      if (signal.aborted && isShutdownAbort(signal.reason) && token) {
        // Shutdown step 3: back to the wait list with attemptsMade unchanged, for another worker.
        await job.moveToWait(token);
        log.info('run aborted by shutdown and returned to the queue');
        throw new WaitingError();
      }
      const error = toError(signal.aborted ? signal.reason : thrown);
      const durationMs = clock() - startedAt;
      const maxAttempts = job.opts.attempts ?? 1;
      const willRetry = !(error instanceof UnrecoverableError) && attempt < maxAttempts;
      const events: BusEvent[] = [];
      if (error instanceof RunTimeoutError) events.push(deps.bus.event('agent:timeout', { ...base, timeoutMs: spec.timeoutMs }, spec.name));
      if (error instanceof RunCancelledError) events.push(deps.bus.event('agent:cancelled', { ...base, reason: error.reason }, spec.name));
      events.push(deps.bus.event('agent:failed', { ...base, error: error.message, durationMs, willRetry }, spec.name));
      if (willRetry) {
        const delayMs = backoffDelay(job, attempt);
        events.push(deps.bus.event('agent:retrying', { ...base, nextAttempt: attempt + 1, delayMs }, spec.name));
      } else {
        events.push(deps.bus.event('agent:dlq', { ...base, error: error.message, attemptsMade: attempt }, spec.name));
      }
      await commit(
        {
          agent: spec.name,
          runId: job.id,
          outcome: 'failure',
          durationMs,
          at: clock(),
          error: error.message,
          attempt,
          ...(error instanceof RunTimeoutError ? { timedOut: true } : {}),
          ...(error instanceof RunCancelledError ? { cancelled: true } : {}),
        },
        events,
        willRetry ? undefined : { spec, job, outcome: `dlq:${error.message}` },
      );
      log.warn({ err: error.message, willRetry }, 'run failed');
      throw markReported(error);
    } finally {
      clearTimeout(timer);
      for (const unsubscribe of subscriptions) unsubscribe();
      await deps.admission?.release(spec, job).catch((err: unknown) => log.warn({ err }, 'could not release the overlap lease'));
    }
  };
}

function buildContext(
  deps: ExecutorDeps,
  spec: AgentSpec,
  job: Job<RunJobData>,
  attempt: number,
  signal: AbortSignal,
  log: Logger,
  subscriptions: (() => void)[],
): AgentContext {
  return {
    signal,
    log: createRunLogger(log, job, (err) => log.debug({ err }, 'job log write failed')),
    data: job.data.data,
    attempt,
    runId: job.id!,
    agent: spec.name,
    publish: (topic, payload) => publishAgentMessage(deps.bus, spec.name, topic, payload),
    subscribe: (topic: string, handler: TopicHandler) => {
      let active = true;
      const pending = deps.bus.subscribe((event) => {
        if (active && event.type === topic) handler(event.data && 'payload' in event.data ? event.data.payload : event.data, event);
      });
      subscriptions.push(() => {
        active = false;
        pending.then((unsubscribe) => unsubscribe(), () => undefined);
      });
      const live = pending.then(() => undefined);
      live.catch((err: unknown) => log.warn({ err, topic }, 'ctx.subscribe could not subscribe to the bus'));
      return live;
    },
    request: <T>(agent: string, payload?: unknown, options?: { timeoutMs?: number }) =>
      deps.request
        ? (deps.request(spec.name, agent, payload, options) as Promise<T>)
        : Promise.reject(new Error('ctx.request needs the RPC service, which this process did not start')),
  };
}

/** Resolves with the work, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** BullMQ's exponential backoff: delay × 2^(attempt − 1). */
function backoffDelay(job: Job, attempt: number): number {
  const backoff = job.opts.backoff;
  const delay = typeof backoff === 'number' ? backoff : (backoff?.delay ?? 0);
  return Math.round(delay * 2 ** (attempt - 1));
}

/** The run's error with its message and stack capped (size-limits.ts): they go to Redis, the DLQ and the bus. */
function toError(value: unknown): Error {
  if (value instanceof Error) return capError(value);
  return capError(new Error(typeof value === 'string' ? value : `agent threw a non-error: ${describeThrown(value)}`));
}

function describeThrown(value: unknown): string {
  try {
    return truncateBytes(JSON.stringify(value) ?? String(value), MAX_ERROR_MESSAGE_BYTES);
  } catch {
    return String(value);
  }
}

function markReported<E extends Error>(error: E): E {
  (error as unknown as Record<symbol, unknown>)[REPORTED] = true;
  return error;
}
