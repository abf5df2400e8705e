import type { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import type { AgentStateStore } from '../self-healing/agent-state.js';
import { agentToggleRules } from '../agents/agent-toggle.js';
import type { RunResult } from './agent-executor.js';
import { createAgentWorker } from './agent-worker.js';
import { bootGateRules } from '../self-healing/boot.js';
import type { EventBus } from '../messaging/bus.js';
import { CircuitBreaker } from '../self-healing/circuit-breaker.js';
import type { GateRule } from './gating.js';
import { dependencyHealthRule } from '../self-healing/health-gate.js';
import type { Keys } from '../redis/keys.js';
import { createWorkerMetrics, type WorkerMetrics } from '../observability/worker-metrics.js';
import type { RunJobData } from '../queues/queues.js';
import type { Registry } from '../agents/registry.js';
import { RpcClient, startRpcResponder } from '../messaging/rpc.js';
import { createRunAdmission, type RunAdmission } from './run-admission.js';
import { createRunTracer } from '../observability/run-tracing.js';
import type { Tracing } from '../observability/tracing.js';
import { sendCancel, startRunCancelListener, type RunPhase } from './run-cancel.js';
import { Queue } from 'bullmq';
import { LimiterClient } from './rate-limits.js';
import { QUEUE_NAMES } from '../queues/queues.js';
import { createCatchUp } from '../queues/tick-runs.js';
import { schedulePauseRule } from '../operator/schedule-pause.js';

/** The gate every worker applies (gating.ts), in the order its reasons are reported. */
export function workerGateRules(): GateRule[] {
  return [...agentToggleRules(), schedulePauseRule(), ...bootGateRules(), dependencyHealthRule()];
}

export interface WorkerRuntimeOptions {
  /** Our command connection: run admission, gate reads, agents' events. */
  redis: Redis;
  /**
   * BullMQ's connection (the Worker); each run's completion script rides on it with BullMQ's own
   * completion. Kept apart from `redis`: BullMQ loads its ~60 scripts onto the connection it is
   * given, and ioredis copies every loaded script into each pipeline made on that connection.
   */
  bullConnection: Redis;
  keys: Keys;
  registry: Registry;
  log: Logger;
  workerId: string;
  concurrency: number;
  bus: EventBus;
  /** Agent state (read by other parts of the process; the run path records in its completion script). */
  state: AgentStateStore;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** `MAX_STALLED_COUNT`; default DEFAULT_MAX_STALLED_COUNT (agent-worker.ts). */
  maxStalledCount?: number;
  /** The memory monitor's hand-back (priority-3 shedding under pressure); none when not given. */
  handBack?: (spec: AgentSpec) => string | undefined;
  /** OpenTelemetry (tracing.ts) when it is on: BullMQ's spans and ours around every attempt. */
  tracing?: Tracing;
  /** `CIRCUIT_WINDOW_MS`: the circuit breaker's rolling window; one hour when not given. */
  circuitWindowMs?: number;
  /** DLQ_RETAIN / COMPLETED_RETAIN, for the runs catch-up queues. */
  retention?: { dlqRetain: number; completedRetain: number };
  /** With several shards: where `ctx.request` finds an agent of another shard (shards.ts). */
  keysOf?: (agent: string) => Keys | undefined;
  /** The process's worker metrics, when several runtimes (one per shard) share them. */
  metrics?: WorkerMetrics;
}

/** The per-run parts of a worker process, wired as every worker runs them. */
export interface WorkerRuntime {
  worker: Worker<RunJobData, RunResult>;
  rpc: RpcClient;
  admission: RunAdmission;
  /** The circuit breaker the gate and outcome listener use (the nightly job reads it too). */
  circuit: CircuitBreaker;
  metrics: WorkerMetrics;
  /** Ids of the runs executing on this worker (heartbeat, shutdown drain). */
  activeRuns: Set<string>;
  /** Starts the RPC responder and the cancel listener (they need the worker); resolves to their close. */
  startServices(): Promise<() => Promise<void>>;
}

/**
 * Builds the agents worker with everything a run goes through: admission (the gate — enable flag,
 * boot, dependency health —, dependency waits, overlap lease, own circuit: one script), completion
 * (state, metrics, circuit, events, dependents, lease: one script riding with BullMQ's), the local
 * metrics, `ctx.request`, cancels and memory hand-back. The worker app and the benchmark both use
 * it, so the bench measures the path that runs.
 */
export function createWorkerRuntime(options: WorkerRuntimeOptions): WorkerRuntime {
  const { redis, bullConnection, keys, registry, log, workerId } = options;
  const activeRuns = new Set<string>();
  const runPhases = new Map<string, RunPhase>();
  const circuit = new CircuitBreaker({ redis, keys, log, ...(options.circuitWindowMs !== undefined ? { windowMs: options.circuitWindowMs } : {}) });
  // Only agents with a catch-up window queue runs from the worker; the queue is made for them alone.
  let catchUpQueue: Queue<RunJobData> | undefined;
  if (registry.list().some((spec) => typeof spec.catchUp === 'object')) {
    catchUpQueue = new Queue<RunJobData>(QUEUE_NAMES.agents, { connection: bullConnection, prefix: keys.bullPrefix });
    catchUpQueue.on('error', () => {});
  }
  const catchUp = registry.list().some((spec) => spec.catchUp !== 'latest')
    ? createCatchUp({ queue: catchUpQueue, redis, keys, retention: options.retention ?? { dlqRetain: 100, completedRetain: 1000 } })
    : undefined;
  const admission = createRunAdmission({
    redis,
    keys,
    log,
    rules: workerGateRules(),
    circuit: circuit.settings,
    lockDurationMs: options.lockDurationMs,
    historyLength: options.bus.historySize,
    limiters: registry.limiters,
    cancelHolder: (runId, reason) => {
      sendCancel(redis, keys, runId, reason).catch((err: unknown) => log.warn({ err, runId }, 'could not ask for a run to be cancelled'));
    },
    onRateLimited: (spec, job, waitMs, limiter) => {
      options.bus
        .publish(
          'agent:rate-limited',
          { runId: job.id, attempt: job.attemptsMade + 1, waitMs, ...(limiter ? { limiter } : {}), ...(job.data.pipelineId ? { pipelineId: job.data.pipelineId } : {}) },
          spec.name,
        )
        .catch(() => undefined);
    },
    ...(catchUp ? { catchUp } : {}),
  });
  const metrics = options.metrics ?? createWorkerMetrics({ activeRuns: () => activeRuns.size, workerId });
  const rpc = new RpcClient({ redis, keys, log, ...(options.keysOf ? { keysOf: options.keysOf } : {}) });
  const worker = createAgentWorker({
    request: (from, agent, payload, requestOptions) => rpc.request(agent, payload, { ...requestOptions, from }),
    connection: bullConnection,
    redis,
    keys,
    registry,
    bus: options.bus,
    log,
    workerId,
    concurrency: options.concurrency,
    admission,
    circuit: circuit.settings,
    outcomeListeners: [metrics.outcomeListener],
    limiter: new LimiterClient({ redis, keys, limiters: registry.limiters }),
    ...(options.handBack ? { handBack: options.handBack } : {}),
    activeRuns,
    runPhases,
    lockDurationMs: options.lockDurationMs,
    stalledIntervalMs: options.stalledIntervalMs,
    ...(options.maxStalledCount !== undefined ? { maxStalledCount: options.maxStalledCount } : {}),
    ...(options.tracing ? { telemetry: options.tracing.telemetry, tracer: createRunTracer({ tracer: options.tracing.tracer, workerId }) } : {}),
  });
  return {
    worker,
    rpc,
    admission,
    circuit,
    metrics,
    activeRuns,
    async startServices() {
      const responder = startRpcResponder({ redis, keys, log, agents: registry.list(), workerId });
      const cancelListener = await startRunCancelListener({ redis, keys, log, worker, workerId, phaseOf: (runId) => runPhases.get(runId) });
      return async () => {
        await Promise.all([responder.close(), cancelListener.close(), rpc.close(), catchUpQueue?.close()]);
      };
    },
  };
}
