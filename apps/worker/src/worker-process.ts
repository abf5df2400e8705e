import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import {
  AgentStateStore,
  EventBus,
  createWorkerRuntime,
  HEALTH_CHECK_JOB,
  NIGHTLY_JOB,
  createHealthCheckHandler,
  createNightlyHandler,
  createSystemWorker,
  type SystemJobHandler,
  createShards,
  concurrencyPerShard,
  createWorkerMetrics,
  CircuitBreaker,
  createLogger,
  createRedisConnection,
  createProcessShutdown,
  closeRedisConnection,
  MemoryMonitor,
  WorkerHeartbeat,
  readProcessMemory,
  registerWorkerDrain,
  loadConfig,
  loadRegistry,
  makeWorkerId,
  BOOT_CHECK_JOB,
  createBootCheckHandler,
  bindPort,
  installProcessFaultPolicy,
  createMemoryShedding,
  RedisAvailability,
  UncaughtAgentError,
  type Availability,
  type WorkerRuntime,
  startTracing,
} from '@werkpilot/shared';
import { createWorkerHttpApp } from './worker-http.js';

const WORKER_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * The worker role: loads config and registry, binds its HTTP port, connects, and serves agent runs
 * and system jobs until a signal (or an uncaught exception, see process-faults.ts) runs the graceful
 * shutdown. Resolves once the worker is online — which, with Redis down, waits for Redis (the port
 * answers meanwhile: /healthz 200, /readyz 503 with the reason).
 */
export async function runWorker(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'worker' });
  const registry = await loadRegistry(config.agentsDir);
  const workerId = makeWorkerId();

  // Bound before anything connects: a port clash exits 2 (one line naming the port and the
  // variable) having fetched no job.
  const http = config.workerHttpPort > 0 ? await bindPort({ port: config.workerHttpPort, variable: 'WORKER_HTTP_PORT' }) : undefined;

  // Only loaded when an OTLP endpoint is configured (tracing.ts).
  const tracing = config.tracing ? await startTracing({ settings: config.tracing, defaultServiceName: 'werkpilot-worker', log, instanceId: workerId }) : undefined;

  // Every shard (WERKPILOT_SHARDS) is served here; with one, it is the fleet's prefix and registry.
  const shards = createShards(registry, config.prefix, config.shards);
  const redis = createRedisConnection({ target: config.redisTarget, role: 'worker', log });
  // Each shard's bus keeps its own history; process-level events (online, memory, faults) go to the
  // home shard's (shard 0), and reach every live stream through the fleet's one channel.
  const buses = shards.all.map((shard) => new EventBus({ redis, keys: shard.keys, log }));
  const bus = buses[0]!;
  // Cleanups are registered as each resource is acquired; within a step they run in reverse.
  const { shutdown, reportFault } = createProcessShutdown({
    log,
    graceMs: config.shutdownGraceMs,
    redis,
    bus,
    identity: { process: 'worker', workerId },
    faultIdentity: { workerId },
    tracing,
  });
  const runtimes: (WorkerRuntime | undefined)[] = [];
  const metrics = createWorkerMetrics({ activeRuns: () => runtimes.reduce((sum, runtime) => sum + (runtime?.activeRuns.size ?? 0), 0), workerId });
  installProcessFaultPolicy({
    log,
    shutdown,
    crashGraceMs: Math.min(config.shutdownGraceMs, 5000),
    onUnhandledRejection: (fault) => {
      metrics.countUnhandledRejection(fault.scope?.agent);
      reportFault(fault);
    },
    // The run whose code threw fails with it (an attempt spent); the shutdown returns the others.
    onUncaughtException: (fault) => {
      const { scope } = fault;
      if (scope?.activity === 'run' && scope.runId && scope.agent) {
        const shard = shards.of(scope.agent);
        if (shard) runtimes[shard.index]?.worker.cancelJob(scope.runId, new UncaughtAgentError(fault.message) as unknown as string);
      }
    },
  });
  const availability = new RedisAvailability({ redis });
  let isOnline = false;
  const readiness = async (): Promise<Availability> => {
    if (shutdown.isShuttingDown) return { available: false, reason: 'shutting down' };
    const redisVerdict = await availability.check();
    if (!redisVerdict.available) return redisVerdict;
    return isOnline ? { available: true } : { available: false, reason: 'starting' };
  };
  if (http) {
    http.serve(
      createWorkerHttpApp({
        workerId,
        metrics: () => metrics,
        readiness,
        isStopping: () => shutdown.isShuttingDown,
      }),
    );
    shutdown.register(5, 'http server', () => http.close());
  }

  for (const shardBus of buses) shutdown.register(5, 'event bus', () => shardBus.close());
  const memory = new MemoryMonitor({
    log,
    intervalMs: config.memoryCheckIntervalMs,
    publish: (type, data) => bus.publish(type, data),
    identity: { process: 'worker', workerId },
  });
  const shedding = createMemoryShedding({ monitor: memory, log });
  // BullMQ gets a connection of its own (see WorkerRuntimeOptions.bullConnection).
  const bullConnection = createRedisConnection({ target: config.redisTarget, role: 'worker:bullmq', log });
  shutdown.register(6, 'bullmq connection', () => closeRedisConnection(bullConnection));
  const concurrencies = concurrencyPerShard(shards, config.workerConcurrency);
  const heartbeats: WorkerHeartbeat[] = [];
  // Every shard's workers are made first and awaited together, so no shard takes runs for long
  // before the others are ready and the heartbeats and memory shedding are on.
  const shardsReady: Promise<unknown>[] = [];
  for (const shard of shards.all) {
    const shardBus = buses[shard.index]!;
    const { keys } = shard;
    const name = shards.count === 1 ? '' : ` (shard ${shard.index})`;
    const state = new AgentStateStore({ redis, keys });
    const runtime =
      concurrencies[shard.index]! === 0
        ? undefined
        : createWorkerRuntime({
            redis,
            bullConnection,
            keys,
            registry: shard.registry,
            log,
            workerId,
            concurrency: concurrencies[shard.index]!,
            bus: shardBus,
            state,
            handBack: shedding.handBack,
            lockDurationMs: config.lockDurationMs,
            stalledIntervalMs: config.stalledIntervalMs,
            maxStalledCount: config.maxStalledCount,
            ...(tracing ? { tracing } : {}),
            circuitWindowMs: config.circuitWindowMs,
            retention: { dlqRetain: config.dlqRetain, completedRetain: config.completedRetain },
            metrics,
            ...(shards.count > 1 ? { keysOf: (agent: string) => shards.of(agent)?.keys } : {}),
          });
    runtimes.push(runtime);
    if (runtime) {
      shutdown.register(5, `run admission${name}`, () => runtime.admission.close());
      registerWorkerDrain(shutdown, runtime.worker, { name: `agents worker${name}`, activeJobs: runtime.activeRuns, isRedisUp: () => redis.status === 'ready' });
    }
    // Internal jobs by name; each capability registers its handler here.
    const systemHandlers: Record<string, SystemJobHandler> = {};
    systemHandlers[BOOT_CHECK_JOB] = createBootCheckHandler({ registry: shard.registry, log });
    systemHandlers[HEALTH_CHECK_JOB] = createHealthCheckHandler({ registry: shard.registry, log });
    systemHandlers[NIGHTLY_JOB] = createNightlyHandler({
      redis,
      keys,
      registry: shard.registry,
      state,
      circuit: runtime?.circuit ?? new CircuitBreaker({ redis, keys, log, windowMs: config.circuitWindowMs }),
      bus: shardBus,
      log,
      timezone: config.nightlyTz,
      completedRetain: config.completedRetain,
    });
    const activeSystemJobs = new Set<string>();
    const systemWorker = createSystemWorker({ connection: bullConnection, keys, log, workerId, handlers: systemHandlers, activeJobs: activeSystemJobs });
    registerWorkerDrain(shutdown, systemWorker, { name: `system worker${name}`, activeJobs: activeSystemJobs, isRedisUp: () => redis.status === 'ready' });
    shardsReady.push(Promise.all([runtime?.worker.waitUntilReady(), systemWorker.waitUntilReady()]));
    const startedAt = new Date().toISOString();
    // Each shard's schedulers see the worker in their own namespace (status, /metrics, the health
    // monitor's "is any worker alive").
    heartbeats.push(
      new WorkerHeartbeat({
        redis,
        keys,
        log,
        intervalMs: config.heartbeatIntervalMs,
        describe: () => {
          const { heapPercent, rssMB, heapUsedMB } = readProcessMemory();
          return {
            id: workerId,
            host: hostname(),
            pid: process.pid,
            concurrency: concurrencies[shard.index]!,
            active: runtime?.activeRuns.size ?? 0,
            heapPercent,
            rssMB,
            heapUsedMB,
            isUnderMemoryPressure: memory.isUnderPressure,
            startedAt,
            version: WORKER_VERSION,
          };
        },
      }),
    );
  }
  await Promise.all(shardsReady);
  for (const [index, runtime] of runtimes.entries()) {
    if (runtime) shutdown.register(5, `rpc and run cancellation${shards.count === 1 ? '' : ` (shard ${index})`}`, await runtime.startServices());
  }
  const agentWorkers = runtimes.flatMap((runtime) => (runtime ? [runtime.worker] : []));
  shedding.attach({
    pause: async (doNotWaitActive) => {
      await Promise.all(agentWorkers.map((worker) => worker.pause(doNotWaitActive)));
    },
    resume: () => {
      for (const worker of agentWorkers) worker.resume();
    },
  });
  memory.start();
  shutdown.register(1, 'memory monitor', () => {
    memory.stop();
    shedding.close();
  });
  await Promise.all(heartbeats.map((heartbeat) => heartbeat.start()));
  shutdown.register(1, 'heartbeat timer', () => {
    for (const heartbeat of heartbeats) heartbeat.stop();
  });
  shutdown.register(4, 'heartbeat removal and worker:offline', async () => {
    if (redis.status !== 'ready') {
      log.info('redis unavailable: this worker leaves the live list when its heartbeat expires');
      return;
    }
    await Promise.all(heartbeats.map((heartbeat) => heartbeat.remove()));
    await bus.publish('worker:offline', { workerId });
  });
  await bus.publish('worker:online', { workerId, concurrency: config.workerConcurrency, agents: registry.names() });
  isOnline = true;
  log.info({ workerId, concurrency: config.workerConcurrency, agents: registry.size, ...(http ? { httpPort: http.port } : {}) }, 'worker online');
}
