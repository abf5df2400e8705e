import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import { ControlKeyError, controlKeyValue } from './concurrency-slots.js';
import { InvalidInputError } from '../process/errors.js';
import type { Keys } from '../redis/keys.js';
import { claimIdempotencyKey, checkIdempotencyKey, releaseIdempotencyKey, requestFingerprint, type IdempotentResult } from './idempotent-triggers.js';
import { plannedPipelineRuns, startPipeline } from './pipeline.js';
import { runJobOptions, type Retention, type RunJobData } from '../queues/queues.js';
import type { Registry } from '../agents/registry.js';
import type { TraceParent, TriggerTracer } from '../observability/run-tracing.js';

export interface TriggerDeps {
  queue: Queue<RunJobData>;
  registry: Registry;
  retention: Retention;
  /** Needed for `withDependents` (the pipeline's record). */
  redis?: Redis;
  keys?: Keys;
  /** Safety deadline of a pipeline's parked dependents (PipelineDeps.parkedRecheckMs). */
  parkedRecheckMs?: number;
  /** Tracing on: the trigger's span, whose trace every run it queues joins (run-tracing.ts). */
  tracer?: TriggerTracer;
  /** How long an idempotency key answers with its first run (IDEMPOTENCY_TTL_MS); default 24 h. */
  idempotencyTtlMs?: number;
}

export interface TriggerOptions {
  /** Given to the run as `ctx.data`; must be JSON-serialisable. */
  data?: unknown;
  /** Also run every transitive dependent after it, in dependency order (a pipeline run; see pipeline.ts). */
  withDependents?: boolean;
  /** The caller's W3C trace context (HTTP `traceparent`/`tracestate`): with tracing on, the runs join its trace. */
  traceParent?: TraceParent;
  /**
   * Makes the trigger idempotent (idempotent-triggers.ts): the same key for the same agent within
   * its TTL answers the first request's ids (with `replayed: true`) and queues nothing.
   */
  idempotencyKey?: string;
}

/** What a trigger answers: the run's id; for a pipeline its id and runs; `replayed` when an idempotency key answered an earlier run. */
export type TriggeredRun = IdempotentResult & { replayed?: true };

/** Largest `data` a manual run accepts, serialised. */
export const MAX_RUN_DATA_BYTES = 1024 * 1024;

/**
 * Queues a manual run of `agent` now, with its priority and retry policy.
 * Throws AgentNotFoundError for an unknown agent and InvalidInputError for data that is not JSON,
 * is larger than 1 MiB or that a control key function cannot handle, or a bad idempotency key —
 * before anything is written; IdempotencyConflictError for a key reused with another request.
 */
export async function triggerRun(deps: TriggerDeps, agent: string, options: TriggerOptions = {}): Promise<TriggeredRun> {
  const spec = deps.registry.require(agent);
  checkRunData(options.data);
  for (const name of options.withDependents ? [spec.name, ...deps.registry.dependentsOf(spec.name)] : [spec.name]) {
    checkControlKeys(deps.registry.require(name), options.data);
  }
  if (options.withDependents && (!deps.redis || !deps.keys)) throw new Error('triggerRun with withDependents needs TriggerDeps.redis and .keys');
  if (options.idempotencyKey !== undefined) checkIdempotencyKey(options.idempotencyKey);
  // Validated first: a span is named after the agent, so only known agents name one.
  if (deps.tracer) return deps.tracer.trace(spec.name, { isPipeline: options.withDependents === true, parent: options.traceParent }, () => enqueueRun(deps, spec, options));
  return enqueueRun(deps, spec, options);
}

async function enqueueRun(deps: TriggerDeps, spec: AgentSpec, options: TriggerOptions): Promise<TriggeredRun> {
  if (options.idempotencyKey === undefined) return queueRun(deps, spec, options, options.withDependents ? { pipelineId: randomUUID() } : {});
  const key = options.idempotencyKey;
  if (!deps.redis || !deps.keys) throw new Error('triggerRun with an idempotency key needs TriggerDeps.redis and .keys');
  const store = { redis: deps.redis, keys: deps.keys };
  // The run's ids are chosen before it is queued, so every request with this key can answer them.
  const planned: IdempotentResult = options.withDependents
    ? (() => {
        const pipelineId = randomUUID();
        const runs = plannedPipelineRuns(deps.registry, spec.name, pipelineId);
        return { runId: runs[0]!.runId, pipelineId, runs };
      })()
    : { runId: `manual-${randomUUID()}` };
  const claim = await claimIdempotencyKey(store, spec.name, key, requestFingerprint(options), planned, deps.idempotencyTtlMs);
  if (!claim.claimed) return { ...claim.result, replayed: true };
  try {
    return await queueRun(deps, spec, options, planned.pipelineId ? { pipelineId: planned.pipelineId } : { runId: planned.runId });
  } catch (err) {
    await releaseIdempotencyKey(store, spec.name, key).catch(() => undefined);
    throw err;
  }
}

async function queueRun(deps: TriggerDeps, spec: AgentSpec, options: TriggerOptions, ids: { runId?: string; pipelineId?: string }): Promise<TriggeredRun> {
  if (ids.pipelineId) {
    // `runs` lets API clients (the CLI's `run --with-dependents --wait`) follow every run of the pipeline.
    const { runId, pipelineId, runs } = await startPipeline({ ...deps, redis: deps.redis!, keys: deps.keys! }, spec.name, options.data, ids.pipelineId);
    return { runId, pipelineId, runs };
  }
  const job = await deps.queue.add(
    spec.name,
    { agent: spec.name, trigger: 'manual', ...(options.data !== undefined ? { data: options.data } : {}) },
    { ...runJobOptions(spec, deps.retention), ...(ids.runId ? { jobId: ids.runId } : {}) },
  );
  return { runId: job.id! };
}

export function checkRunData(data: unknown): void {
  if (data === undefined) return;
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (err) {
    throw new InvalidInputError(`run data must be JSON-serialisable: ${(err as Error).message}`);
  }
  if (json === undefined) throw new InvalidInputError('run data must be JSON-serialisable');
  if (Buffer.byteLength(json) > MAX_RUN_DATA_BYTES) {
    throw new InvalidInputError(`run data is ${Buffer.byteLength(json)} bytes; the limit is ${MAX_RUN_DATA_BYTES} (1 MiB)`);
  }
}

/**
 * Computes the run's control keys (`concurrency.key`, `rateLimit.key`) as the worker will, so that
 * input they cannot handle is refused now (InvalidInputError, 400) rather than failing in the queue.
 */
export function checkControlKeys(spec: AgentSpec, data: unknown): void {
  try {
    if (spec.overlap !== 'allowAll') controlKeyValue(spec.concurrency.key, data, 'concurrency.key', spec.name);
    controlKeyValue(spec.rateLimit?.key, data, 'rateLimit.key', spec.name);
  } catch (err) {
    if (err instanceof ControlKeyError) throw new InvalidInputError(`${err.message}; the run was not queued`);
    throw err;
  }
}
