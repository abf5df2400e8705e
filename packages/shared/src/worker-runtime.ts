import type { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from './agent.js';
import type { AgentStateStore } from './agent-state.js';
import { agentToggleRules } from './agent-toggle.js';
import type { RunResult } from './agent-executor.js';
import { createAgentWorker } from './agent-worker.js';
import { bootGateRules } from './boot.js';
import type { EventBus } from './bus.js';
import { CircuitBreaker, ownCircuitRule } from './circuit-breaker.js';
import { createRunGate } from './gating.js';
import { HealthStore, dependencyHealthRule } from './health.js';
import type { Keys } from './keys.js';
import { createRunMetricsRecorder, createWorkerMetrics, type WorkerMetrics } from './prometheus-metrics.js';
import type { RunJobData } from './queues.js';
import type { Registry } from './registry.js';
import { skipCauseListener } from './nightly.js';
import { RpcClient, startRpcResponder } from './rpc.js';
import { createRunAdmission, type RunAdmission } from './run-admission.js';
import { startRunCancelListener } from './run-cancel.js';

export interface WorkerRuntimeOptions {
  /** Our command connection: run records, events, gate reads (pipelines and our Lua). */
  redis: Redis;
  /**
   * BullMQ's connection (Worker, promote Queue). Kept apart from `redis` on purpose: BullMQ loads
   * its ~60 scripts onto the connection it is given, and ioredis copies every loaded script into
   * each pipeline made on that connection — ~50 µs per pipeline, twice per run, on ours.
   */
  bullConnection: Redis;
  keys: Keys;
  registry: Registry;
  log: Logger;
  workerId: string;
  concurrency: number;
  bus: EventBus;
  state: AgentStateStore;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** `MAX_STALLED_COUNT`; default DEFAULT_MAX_STALLED_COUNT (agent-worker.ts). */
  maxStalledCount?: number;
  /** The memory monitor's hand-back (priority-3 shedding under pressure); none when not given. */
  handBack?: (spec: AgentSpec) => string | undefined;
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
 * Builds the agents worker with everything a run goes through: the gate (enable flag, boot, dependency
 * health, own circuit — one rule list), admission (dependency waits, overlap lease), the outcome
 * listeners (circuit, skip causes, cluster-wide and local metrics), `ctx.request`, and memory
 * hand-back. The worker app and the benchmark both use it, so the bench measures the path that runs.
 */
export function createWorkerRuntime(options: WorkerRuntimeOptions): WorkerRuntime {
  const { redis, bullConnection, keys, registry, log, workerId } = options;
  const activeRuns = new Set<string>();
  const circuit = new CircuitBreaker({ redis, keys, log });
  const health = new HealthStore({ redis, keys });
  const gate = createRunGate({
    rules: [
      ...agentToggleRules({ redis, keys }),
      ...bootGateRules({ redis, keys }),
      dependencyHealthRule({ circuit, health }),
      // May hand this run the half-open trial; should another rule skip it, the circuit hands the trial back.
      ownCircuitRule(circuit),
    ],
  });
  const admission = createRunAdmission({ redis, keys, log, queueConnection: bullConnection });
  const metrics = createWorkerMetrics({ activeRuns: () => activeRuns.size });
  const rpc = new RpcClient({ redis, keys, log });
  const worker = createAgentWorker({
    request: (from, agent, payload, requestOptions) => rpc.request(agent, payload, { ...requestOptions, from }),
    connection: bullConnection,
    redis,
    keys,
    registry,
    state: options.state,
    bus: options.bus,
    log,
    workerId,
    concurrency: options.concurrency,
    gates: [gate],
    admission,
    outcomeListeners: [
      circuit.outcomeListener((agent) => registry.get(agent)?.maxRestartsPerHour),
      skipCauseListener(keys),
      // Cluster-wide exported figures (duration buckets, retries, timeouts) in Redis, and this process's own.
      createRunMetricsRecorder({ redis, keys }),
      metrics.outcomeListener,
    ],
    ...(options.handBack ? { handBack: options.handBack } : {}),
    activeRuns,
    lockDurationMs: options.lockDurationMs,
    stalledIntervalMs: options.stalledIntervalMs,
    ...(options.maxStalledCount !== undefined ? { maxStalledCount: options.maxStalledCount } : {}),
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
      const cancelListener = await startRunCancelListener({ redis, keys, log, worker, workerId });
      return async () => {
        await Promise.all([responder.close(), cancelListener.close(), rpc.close()]);
      };
    },
  };
}
