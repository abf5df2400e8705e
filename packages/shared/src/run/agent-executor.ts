import { INVALID_SPAN_CONTEXT, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { UnrecoverableError, WaitingError, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentContext, AgentLogger, AgentSpec, TopicHandler } from '../agents/agent.js';
import { createRunLogger } from './agent-logger.js';
import type { RunRecord } from '../self-healing/agent-state.js';
import { publishAgentMessage, type EventBus } from '../messaging/bus.js';
import type { CircuitSettings } from '../self-healing/circuit-breaker.js';
import { RunTimeoutError } from '../process/errors.js';
import type { Keys } from '../redis/keys.js';
import type { RunJobData } from '../queues/queues.js';
import { runInScope } from '../process/process-faults.js';
import { joinSkipReasons, skipCausesOf, skipReasonTexts } from './skip-reasons.js';
import { MAX_ERROR_MESSAGE_BYTES, capError, truncateBytes } from './size-limits.js';
import type { Registry } from '../agents/registry.js';
import type { RunAdmission } from './run-admission.js';
import { ControlKeyError } from './concurrency-slots.js';
import type { LimiterClient } from './rate-limits.js';
import { scheduledAtOf } from '../queues/tick-runs.js';
import { RunCancelledError, type RunPhase } from './run-cancel.js';
import { createRunCompletion, type Completion } from './run-completion.js';
import type { RunTrace, RunTracer } from '../observability/run-tracing.js';
import { isShutdownAbort } from '../process/shutdown.js';

/**
 * What a finished `agents` job returns (visible in Bull Board and `GET /api/runs/:id`); with
 * tracing on, the attempt's trace id too.
 */
export type RunResult = (
  | { outcome: 'success'; result: unknown; durationMs: number; workerId: string }
  | { outcome: 'skipped'; reasons: string[]; workerId: string }
  | { outcome: 'cancelled'; reason: string; state: 'running'; durationMs: number; workerId: string }
) & { traceId?: string };

/** Told of every recorded run, in this process (the worker's own Prometheus figures). */
export type OutcomeListener = (record: RunRecord) => void;

export interface ExecutorDeps {
  /** Our command connection (run admission, agents' `ctx.publish`). */
  redis: Redis;
  /**
   * BullMQ's connection: each run's completion script is sent on it just before the processor
   * returns, so it rides with BullMQ's own completion (run-completion.ts). Default `redis`.
   */
  bullConnection?: Redis;
  keys: Keys;
  registry: Registry;
  bus: EventBus;
  log: Logger;
  workerId: string;
  /** The gate, dependency waits, overlap lease and circuit admission (run-admission.ts); without it runs start at once. */
  admission?: RunAdmission;
  /** The rules the circuit breaker applies to recorded failures (its window); default the breaker's defaults. */
  circuit?: CircuitSettings;
  /** The worker's LOCK_DURATION_MS (lease TTLs depend on it). */
  lockDurationMs?: number;
  outcomeListeners?: OutcomeListener[];
  /** Serves `ctx.request`; without it, requests reject with a clear error. */
  request?: AgentRequester;
  /** Serves `ctx.limit` (shared limiters); without it, `ctx.limit` rejects with a clear error. */
  limiter?: LimiterClient;
  clock?: () => number;
  /**
   * Aborts a running run's signal with `reason` (BullMQ's Worker.cancelJob), which the run's
   * timeout uses instead of an AbortController of its own. Without it, each run gets one.
   */
  abortRun?: (runId: string, reason: Error) => boolean;
  /**
   * Filled with where each run of this worker stands (for cancels: see RunCancelListenerOptions.phaseOf).
   * The executor sets the phases; whoever runs the processor deletes a run's entry when it returns.
   */
  runPhases?: Map<string, RunPhase>;
  /**
   * Whether this worker hands a run back to the queue untouched (no attempt spent) instead of
   * running it: a reason, or undefined to run it. The memory monitor sheds priority-3 runs here.
   */
  handBack?: (spec: AgentSpec, job: Job<RunJobData>) => string | undefined;
  /** Traces each attempt (run-tracing.ts); none when tracing is off, and then nothing of it runs. */
  tracer?: RunTracer;
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
 * The abort reason of a run whose lock renewal failed: its lock may be gone and BullMQ's
 * stalled-job recovery may already run it elsewhere. The aborted copy records nothing.
 */
export class RunLockLostError extends Error {
  constructor(readonly runId: string) {
    super(`lost the lock of run ${runId}`);
    this.name = 'RunLockLostError';
  }
}

const NOT_ADMITTED = { isTrial: false, slot: undefined } as const;

/** `ctx.span` with tracing off: OpenTelemetry's non-recording span, which ignores every call. */
const NO_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * The processor of the `agents` queue: resolves the agent named by the job, admits it (gate,
 * dependency runs, overlap lease, circuit — one script), runs it with its context and timeout, and
 * completes it (one script riding with BullMQ's completion). So a run costs one Redis round trip
 * of ours, its admission.
 *
 * Failures are thrown back to BullMQ, which retries with the agent's exponential backoff; a run that
 * exhausts its attempts stays in the failed set, which is the dead-letter queue. A cancelled run
 * completes with outcome `cancelled`: it is not a dead letter. A copy of a run that lost its lock
 * records nothing (its completion is fenced by the lock token) and hands nothing back.
 */
export function createAgentProcessor(deps: ExecutorDeps): Processor<RunJobData, RunResult> {
  const clock = deps.clock ?? Date.now;
  const listeners = deps.outcomeListeners ?? [];
  const { bus, workerId, admission } = deps;
  const phases = deps.runPhases;
  const completion = createRunCompletion({
    connection: deps.bullConnection ?? deps.redis,
    keys: deps.keys,
    ...(deps.circuit ? { circuit: deps.circuit } : {}),
    ...(deps.lockDurationMs !== undefined ? { lockDurationMs: deps.lockDurationMs } : {}),
    historyLength: bus.historySize,
  });

  /** Sends the completion (not awaited: it rides with BullMQ's) and tells the local listeners. */
  const complete = (spec: AgentSpec, job: Job<RunJobData>, token: string | undefined, c: Completion, traced: RunTrace | undefined) => {
    phases?.set(job.id!, 'finishing');
    completion.complete(spec, job, token, c, traced?.traceId).then(
      (answer) => {
        if (answer === 'fenced') {
          deps.log.error(
            { agent: spec.name, runId: job.id, attempt: c.record.attempt },
            `lost the lock of run ${job.id}: another worker runs it again, so this copy recorded nothing (keep synchronous work in an agent under LOCK_DURATION_MS)`,
          );
        }
      },
      (err: unknown) => deps.log.error({ err, agent: spec.name, runId: job.id }, 'could not record the end of a run'),
    );
    for (const listener of listeners) listener(c.record);
  };

  const { tracer } = deps;
  const failUnknownAgent = async (job: Job<RunJobData>): Promise<never> => {
    // In a shard's runtime, a run of an agent placed elsewhere is one queued before WERKPILOT_SHARDS
    // or the dependency graph changed (docs/operations.md#shards): the reason says where it went.
    const reason = deps.registry.missingReason(job.name);
    await bus.publish('agent:dlq', { runId: job.id, error: reason, workerId }, job.name);
    throw markReported(new UnrecoverableError(reason));
  };

  // Not async: it hands back runAttempt's own promise, so a run costs no promise more than before tracing existed.
  return (job, token, bullSignal) => {
    const spec = deps.registry.get(job.name);
    if (!spec) return failUnknownAgent(job);
    const attempt = job.attemptsMade + 1;
    if (tracer) return tracer.trace(spec, job, attempt, (traced) => runAttempt(spec, job, token, bullSignal, attempt, traced));
    return runAttempt(spec, job, token, bullSignal, attempt, undefined);
  };

  /** One attempt of a run of `spec`; `traced` is its span when tracing is on. */
  async function runAttempt(
    spec: AgentSpec,
    job: Job<RunJobData>,
    token: string | undefined,
    bullSignal: AbortSignal | undefined,
    attempt: number,
    traced: RunTrace | undefined,
  ): Promise<RunResult> {
    const handBackReason = token ? deps.handBack?.(spec, job) : undefined;
    if (handBackReason) {
      await job.moveToWait(token);
      deps.log.info({ agent: spec.name, runId: job.id, reason: handBackReason }, 'run handed back to the queue');
      await new Promise((resolve) => setTimeout(resolve, HAND_BACK_PAUSE_MS));
      throw new WaitingError();
    }

    const runId = job.id!;
    const base: Record<string, unknown> = job.data.pipelineId ? { runId, attempt, workerId, pipelineId: job.data.pipelineId } : { runId, attempt, workerId };
    if (traced?.traceId) base.traceId = traced.traceId;
    const started = bus.encode('agent:started', { ...base, trigger: job.data.trigger }, spec.name);

    let admitted: Pick<Completion, 'isTrial' | 'slot'> = NOT_ADMITTED;
    phases?.set(runId, 'admitting');
    if (admission) {
      // Parks the job (throws DelayedError) while dependency runs of its tick are pending, its agent's turn has not come or its tokens are not due.
      traced?.gateStarted();
      let decision: Awaited<ReturnType<RunAdmission['admit']>>;
      try {
        decision = await admission.admit(spec, job, token, started);
      } catch (err) {
        if (!(err instanceof ControlKeyError)) throw err;
        // The agent's own key function failed on this run's data: no attempt can do better.
        const error = capError(new UnrecoverableError(err.message));
        const events = [
          bus.encode('agent:failed', { ...base, error: error.message, durationMs: 0, willRetry: false }, spec.name),
          bus.encode('agent:dlq', { ...base, error: error.message, attemptsMade: attempt }, spec.name),
        ];
        const record: RunRecord = { agent: spec.name, runId, outcome: 'failure', durationMs: 0, at: clock(), error: error.message, attempt };
        complete(spec, job, token, { record, events, finished: `dlq:${error.message}`, ...NOT_ADMITTED }, traced);
        deps.log.warn({ agent: spec.name, runId, err: error }, 'run failed: its control key could not be computed');
        throw markReported(error);
      }
      traced?.gated(decision.kind, decision.kind === 'skip' ? skipReasonTexts(decision.reasons) : undefined);
      if (decision.kind === 'skip') {
        const reasons = skipReasonTexts(decision.reasons);
        const dependencyReasons = skipReasonTexts(decision.reasons.filter((r) => r.dependency !== undefined));
        const events = [bus.encode('agent:skipped', { ...base, reasons }, spec.name)];
        if (dependencyReasons.length > 0) events.unshift(bus.encode('dependency:unhealthy', { ...base, reasons: dependencyReasons }, spec.name));
        const error = joinSkipReasons(decision.reasons);
        const record: RunRecord = { agent: spec.name, runId, outcome: 'skipped', at: clock(), error };
        complete(spec, job, token, { record, events, finished: `skipped:${error}`, isTrial: false, slot: decision.slot, skipCauses: skipCausesOf(decision.reasons) }, traced);
        deps.log.info({ agent: spec.name, runId, reasons }, 'run skipped');
        return { outcome: 'skipped', reasons, workerId };
      }
      admitted = { isTrial: decision.isTrial, slot: decision.slot };
    } else {
      // Without admission nothing published it: do it here, not awaited (commands on one connection stay in order).
      bus.publish('agent:started', { ...base, trigger: job.data.trigger }, spec.name).catch(() => undefined);
    }

    phases?.set(runId, 'running');
    const startedAt = clock();
    let ownTimeout: AbortController | undefined;
    let signal: AbortSignal;
    if (bullSignal && deps.abortRun) {
      signal = bullSignal;
    } else {
      ownTimeout = new AbortController();
      signal = bullSignal ? AbortSignal.any([ownTimeout.signal, bullSignal]) : ownTimeout.signal;
    }
    const abortRun = deps.abortRun;
    const timer = setTimeout(() => {
      const reason = new RunTimeoutError(spec.timeoutMs);
      if (ownTimeout) ownTimeout.abort(reason);
      else abortRun!(runId, reason);
    }, spec.timeoutMs);
    const subscriptions: (() => void)[] = [];
    const ctx = buildContext(deps, spec, job, attempt, signal, subscriptions, traced);

    try {
      // The scope attributes faults the run's code leaves behind (an unawaited rejection, a throw in
      // a timer) to this agent and run; see process-faults.ts.
      const scope = { agent: spec.name, runId, attempt, activity: 'run' as const };
      const result = await untilAborted(() => runInScope(scope, () => spec.definition.run(ctx)), signal);
      const durationMs = clock() - startedAt;
      const record: RunRecord = { agent: spec.name, runId, outcome: 'success', durationMs, at: clock(), attempt };
      complete(spec, job, token, { record, events: [bus.encode('agent:completed', { ...base, durationMs }, spec.name)], finished: 'ok', ...admitted }, traced);
      return { outcome: 'success', result: result ?? null, durationMs, workerId };
    } catch (thrown) {
      const aborted = signal.aborted ? (signal.reason as unknown) : undefined;
      if (aborted instanceof RunLockLostError) {
        // Another copy may be running: record nothing, release nothing. Should this worker still
        // hold the lock after all, the run goes back to the queue without spending an attempt.
        if (token) await job.moveToWait(token).catch(() => undefined);
        throw new WaitingError();
      }
      if (isShutdownAbort(aborted) && token) {
        // Shutdown step 3: back to the wait list with attemptsMade unchanged, for another worker;
        // the run keeps its lease and trial, and takes them up again when it restarts.
        await job.moveToWait(token);
        deps.log.info({ agent: spec.name, runId }, 'run aborted by shutdown and returned to the queue');
        throw new WaitingError();
      }
      // A timer may fire up to a millisecond before the wall clock says its time has passed; a
      // timed-out attempt lasted its whole timeout.
      const elapsedMs = clock() - startedAt;
      const durationMs = aborted instanceof RunTimeoutError ? Math.max(elapsedMs, spec.timeoutMs) : elapsedMs;
      if (aborted instanceof RunCancelledError) {
        const record: RunRecord = { agent: spec.name, runId, outcome: 'cancelled', at: clock(), error: aborted.reason, attempt };
        const events = [bus.encode('agent:cancelled', { ...base, reason: aborted.reason, state: 'running' }, spec.name)];
        complete(spec, job, token, { record, events, finished: `cancelled:${aborted.reason}`, ...admitted }, traced);
        deps.log.info({ agent: spec.name, runId, reason: aborted.reason }, 'run cancelled');
        return { outcome: 'cancelled', reason: aborted.reason, state: 'running', durationMs, workerId };
      }
      const error = toError(aborted ?? thrown);
      const maxAttempts = job.opts.attempts ?? 1;
      const willRetry = !(error instanceof UnrecoverableError) && attempt < maxAttempts;
      const events: string[] = [];
      if (error instanceof RunTimeoutError) events.push(bus.encode('agent:timeout', { ...base, timeoutMs: spec.timeoutMs }, spec.name));
      events.push(bus.encode('agent:failed', { ...base, error: error.message, durationMs, willRetry }, spec.name));
      if (willRetry) {
        events.push(bus.encode('agent:retrying', { ...base, nextAttempt: attempt + 1, delayMs: backoffDelay(job, attempt) }, spec.name));
      } else {
        events.push(bus.encode('agent:dlq', { ...base, error: error.message, attemptsMade: attempt }, spec.name));
      }
      const record: RunRecord = {
        agent: spec.name,
        runId,
        outcome: 'failure',
        durationMs,
        at: clock(),
        error: error.message,
        attempt,
        ...(error instanceof RunTimeoutError ? { timedOut: true } : {}),
      };
      complete(spec, job, token, { record, events, ...(willRetry ? {} : { finished: `dlq:${error.message}` as const }), ...admitted }, traced);
      deps.log.warn({ agent: spec.name, runId, attempt, err: error, willRetry }, 'run failed');
      throw markReported(error);
    } finally {
      clearTimeout(timer);
      for (const unsubscribe of subscriptions) unsubscribe();
    }
  }
}

function buildContext(
  deps: ExecutorDeps,
  spec: AgentSpec,
  job: Job<RunJobData>,
  attempt: number,
  signal: AbortSignal,
  subscriptions: (() => void)[],
  traced: RunTrace | undefined,
): AgentContext {
  // The logger is built on first use: most runs never log, and a child logger per run shows in profiles.
  let log: Logger | undefined;
  const runLog = () =>
    (log ??= deps.log.child(
      traced?.traceId ? { agent: spec.name, runId: job.id, attempt, trace_id: traced.traceId, span_id: traced.span.spanContext().spanId } : { agent: spec.name, runId: job.id, attempt },
    ));
  let agentLog: AgentLogger | undefined;
  return {
    signal,
    get log() {
      agentLog ??= createRunLogger(runLog(), job, (err) => runLog().debug({ err }, 'job log write failed'));
      return agentLog;
    },
    data: job.data.data,
    attempt,
    runId: job.id!,
    agent: spec.name,
    span: traced?.span ?? NO_SPAN,
    otelContext: traced?.context ?? ROOT_CONTEXT,
    scheduledAt: scheduledAtOf(job),
    limit: async (name: string, cost?: number) => {
      if (!deps.limiter) throw new Error('ctx.limit needs the limiter service, which this process did not start');
      await deps.limiter.take(spec, job.id!, name, cost, signal);
    },
    publish: (topic, payload) => publishAgentMessage(deps.bus, spec.name, topic, payload),
    subscribe: (topic: string, handler: TopicHandler) => {
      let active = true;
      const pending = deps.bus.subscribe((event) => {
        if (active && event.type === topic) handler(event.data && 'payload' in event.data ? event.data.payload : event.data, event);
      });
      subscriptions.push(() => {
        active = false;
        pending.then(
          (unsubscribe) => unsubscribe(),
          () => undefined,
        );
      });
      const live = pending.then(() => undefined);
      live.catch((err: unknown) => runLog().warn({ err, topic }, 'ctx.subscribe could not subscribe to the bus'));
      return live;
    },
    request: <T>(agent: string, payload?: unknown, options?: { timeoutMs?: number }) =>
      deps.request ? (deps.request(spec.name, agent, payload, options) as Promise<T>) : Promise.reject(new Error('ctx.request needs the RPC service, which this process did not start')),
  };
}

/** Runs the agent and resolves with its result, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(run: () => T | Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = (fn: () => void) => {
      signal.removeEventListener('abort', onAbort);
      fn();
    };
    let work: T | Promise<T>;
    try {
      work = run();
    } catch (err) {
      settle(() => reject(err));
      return;
    }
    Promise.resolve(work).then(
      (value) => settle(() => resolve(value)),
      (err: unknown) => settle(() => reject(err)),
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
