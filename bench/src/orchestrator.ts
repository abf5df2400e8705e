import { randomBytes } from 'node:crypto';
import type { Worker } from 'bullmq';
import { pino, type Logger } from 'pino';
import {
  AgentStateStore,
  EventBus,
  MemoryMonitor,
  type RpcClient,
  buildRegistry,
  createShards,
  createWorkerMetrics,
  createWorkerRuntime,
  createKeys,
  concurrencyPerShard,
  createQueues,
  createRedisConnection,
  defineAgent,
  loadConfig,
  type AgentDefinition,
  type Keys,
  type Queues,
  type Redis,
  type RedisTarget,
  type Registry,
  type RunResult,
  type RunJobData,
  type Tracing,
  type WorkerRuntime,
} from '@werkpilot/shared';
import { countdown } from './samples.js';

/** The configuration a process gets with no environment set. */
const WORKER_DEFAULTS = loadConfig({});

/** Retention as the apps default it (DLQ_RETAIN, COMPLETED_RETAIN). */
export const RETENTION = { dlqRetain: WORKER_DEFAULTS.dlqRetain, completedRetain: WORKER_DEFAULTS.completedRetain };

/**
 * A logger like the apps' (pino at `info`, JSON) whose lines go nowhere: the bench pays for
 * building log lines exactly as production does, without printing them over the table.
 */
export function silentLogger(name: string): Logger {
  return pino({ level: 'info', name }, pino.destination({ dest: '/dev/null', sync: false }));
}

/** A registry of in-memory agents (no module files), validated as the apps validate theirs. */
export function registryOf(definitions: AgentDefinition[]): Registry {
  return buildRegistry(definitions.map((definition, i) => ({ definition, source: `bench-agent-${i}.ts` })));
}

/** An agent that does nothing: what every run costs beyond the agent's own work. */
export function noOpAgent(name: string, extra: Partial<AgentDefinition> = {}): AgentDefinition {
  return defineAgent({ name, run: async () => null, ...extra });
}

/**
 * Many no-op agents, for scenarios that run many runs at once: one agent never has two runs at
 * once (its overlap lease skips or queues the second), so concurrent runs must be of different
 * agents, as they are in a real fleet. `nameOf(i)` cycles through them.
 */
export function noOpFleet(size: number): { registry: Registry; nameOf(i: number): string } {
  const names = Array.from({ length: size }, (_, i) => `no-op-${String(i).padStart(4, '0')}`);
  return { registry: registryOf(names.map((name) => noOpAgent(name))), nameOf: (i) => names[i % size]! };
}

/**
 * Watches a worker's results: a run the executor skipped (overlap, a gate) did not do the work
 * being measured, so `check()` throws naming how many and why.
 */
export function watchOutcomes(worker: Pick<Worker, 'on'>, what: string): { check(): void } {
  let skipped = 0;
  let firstReasons: string[] = [];
  worker.on('completed', (_job, result: RunResult | undefined) => {
    if (result && result.outcome !== 'success') {
      skipped += 1;
      if (firstReasons.length === 0 && result.outcome === 'skipped') firstReasons = result.reasons;
    }
  });
  return {
    check: () => {
      if (skipped > 0) throw new Error(`${skipped} of the ${what} were skipped (${firstReasons.join('; ')}), so they did not take the measured path`);
    },
  };
}

/** Where the bench's orchestrator processes find Redis: a URL (one server) or a target (a cluster). */
export type BenchRedisLocation = string | RedisTarget;

function connectionTarget(location: BenchRedisLocation): RedisTarget {
  return typeof location === 'string' ? { kind: 'single', url: location } : location;
}

/** One orchestrator worker process's parts. */
export interface OrchestratorWorker {
  /** Its agents worker; with several shards, shard 0's (`workers` has every shard's). */
  worker: Worker<RunJobData, RunResult>;
  /** One agents worker per shard that has agents, in shard order. */
  workers: Worker<RunJobData, RunResult>[];
  /** The process's RPC client (what `ctx.request` uses); shard 0's with several shards. */
  rpc: RpcClient;
  /** Its two command connections, ours and BullMQ's (BullMQ's blocking duplicate aside), for counting round trips. */
  connections: Redis[];
  close(): Promise<void>;
}

/**
 * The full worker path: registry, executor with the gate rules, run admission (dependency waits,
 * overlap lease), outcome listeners, RPC and memory hand-back that the worker app wires; agent state
 * (counters, percentiles) and bus events. Mirrors the per-run parts of `apps/worker/src/worker-process.ts`
 * (left out: the system worker, heartbeat timer, worker HTTP and signal handling, which cost
 * nothing per run), shards included: with `shards` = K (WERKPILOT_SHARDS) it serves every shard
 * on the same two connections, one runtime per shard with its share of `concurrency`. Both build
 * the run path with `createWorkerRuntime`, so the bench measures the path that runs.
 */
export async function startOrchestratorWorker({
  url,
  prefix,
  registry,
  concurrency,
  tracing,
  shards: shardCount = 1,
}: {
  /** A Redis URL, or a target such as a cluster's. */
  url: BenchRedisLocation;
  prefix: string;
  registry: Registry;
  concurrency: number;
  /** Tracing on, as a worker with OTEL_EXPORTER_OTLP_ENDPOINT set runs (startTracing, already started). */
  tracing?: Tracing | undefined;
  /** WERKPILOT_SHARDS: the fleet split into this many key prefixes (createShards). */
  shards?: number;
}): Promise<OrchestratorWorker> {
  const log = silentLogger('worker');
  const shards = createShards(registry, prefix, shardCount);
  const workerId = `bench-worker-${randomBytes(2).toString('hex')}`;
  const target = connectionTarget(url);
  const redis = createRedisConnection({ target, role: 'worker', log });
  const buses = shards.all.map((shard) => new EventBus({ redis, keys: shard.keys, log }));
  const memory = new MemoryMonitor({ log, intervalMs: 60_000, publish: (type, data) => buses[0]!.publish(type, data), identity: { process: 'worker', workerId } });
  const bullConnection = createRedisConnection({ target, role: 'worker:bullmq', log });
  const runtimes: WorkerRuntime[] = [];
  const metrics = createWorkerMetrics({ activeRuns: () => runtimes.reduce((sum, runtime) => sum + runtime.activeRuns.size, 0), workerId });
  const concurrencies = concurrencyPerShard(shards, concurrency);
  const closeServices: (() => Promise<void>)[] = [];
  for (const shard of shards.all) {
    if (concurrencies[shard.index] === 0) continue;
    const runtime = createWorkerRuntime({
      redis,
      bullConnection,
      keys: shard.keys,
      registry: shard.registry,
      log,
      workerId,
      concurrency: concurrencies[shard.index]!,
      bus: buses[shard.index]!,
      state: new AgentStateStore({ redis, keys: shard.keys }),
      handBack: memory.handBack,
      // The defaults a worker runs with (LOCK_DURATION_MS, STALLED_INTERVAL_MS unset).
      lockDurationMs: WORKER_DEFAULTS.lockDurationMs,
      stalledIntervalMs: WORKER_DEFAULTS.stalledIntervalMs,
      ...(tracing ? { tracing } : {}),
      metrics,
      ...(shards.count > 1 ? { keysOf: (agent: string) => shards.of(agent)?.keys } : {}),
    });
    runtimes.push(runtime);
    await runtime.worker.waitUntilReady();
    closeServices.push(await runtime.startServices());
  }
  const workers = runtimes.map((runtime) => runtime.worker);
  return {
    worker: workers[0]!,
    workers,
    rpc: runtimes[0]!.rpc,
    connections: [redis, bullConnection],
    close: async () => {
      await Promise.all(workers.map((worker) => worker.close()));
      await Promise.all([...closeServices.map((close) => close()), ...runtimes.map((runtime) => runtime.admission.close())]);
      await Promise.all(buses.map((bus) => bus.close()));
      await Promise.all([redis, bullConnection].map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}

/** The scheduler side: the queues on their own connection, as the scheduler (or API) enqueues. */
export function openOrchestratorQueues(url: BenchRedisLocation, prefix: string): { keys: Keys; queues: Queues; redis: Redis; close(): Promise<void> } {
  const log = silentLogger('scheduler');
  const keys = createKeys(prefix);
  const redis = createRedisConnection({ target: connectionTarget(url), role: 'scheduler', log });
  const queues = createQueues({ connection: redis, keys });
  return {
    keys,
    queues,
    redis,
    close: async () => {
      await queues.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/**
 * A worker of the orchestrator at concurrency 50 about to drain `count` queued runs: its
 * completions counted and its outcomes watched (`what` names the runs when one did not succeed).
 */
export async function startDrainingWorker({ url, prefix, registry, count, what }: { url: string; prefix: string; registry: Registry; count: number; what: string }) {
  const started = await startOrchestratorWorker({ url, prefix, registry, concurrency: 50 });
  const worker = started.worker as unknown as Worker;
  const completions = countdown(count);
  worker.on('completed', completions.tick);
  const outcomes = watchOutcomes(worker, what);
  return { started, completions, outcomes };
}
