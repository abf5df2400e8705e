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
  createKeys,
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

  const keys = createKeys(config.prefix);
  const redis = createRedisConnection({ target: config.redisTarget, role: 'worker', log });
  const bus = new EventBus({ redis, keys, log });
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
  let runtime: WorkerRuntime | undefined;
  installProcessFaultPolicy({
    log,
    shutdown,
    crashGraceMs: Math.min(config.shutdownGraceMs, 5000),
    onUnhandledRejection: (fault) => {
      runtime?.metrics.countUnhandledRejection(fault.scope?.agent);
      reportFault(fault);
    },
    // The run whose code threw fails with it (an attempt spent); the shutdown returns the others.
    onUncaughtException: (fault) => {
      if (fault.scope?.activity === 'run' && fault.scope.runId) {
        runtime?.worker.cancelJob(fault.scope.runId, new UncaughtAgentError(fault.message) as unknown as string);
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
        metrics: () => runtime?.metrics,
        readiness,
        isStopping: () => shutdown.isShuttingDown,
      }),
    );
    shutdown.register(5, 'http server', () => http.close());
  }

  shutdown.register(5, 'event bus', () => bus.close());
  const state = new AgentStateStore({ redis, keys });
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
  runtime = createWorkerRuntime({
    redis,
    bullConnection,
    keys,
    registry,
    log,
    workerId,
    concurrency: config.workerConcurrency,
    bus,
    state,
    handBack: shedding.handBack,
    lockDurationMs: config.lockDurationMs,
    stalledIntervalMs: config.stalledIntervalMs,
    maxStalledCount: config.maxStalledCount,
    ...(tracing ? { tracing } : {}),
    circuitWindowMs: config.circuitWindowMs,
    retention: { dlqRetain: config.dlqRetain, completedRetain: config.completedRetain },
  });
  const { worker, admission, circuit, activeRuns, startServices } = runtime;
  shedding.attach(worker);
  shutdown.register(5, 'run admission', () => admission.close());
  registerWorkerDrain(shutdown, worker, { name: 'agents worker', activeJobs: activeRuns, isRedisUp: () => redis.status === 'ready' });
  // Internal jobs by name; each capability registers its handler here.
  const systemHandlers: Record<string, SystemJobHandler> = {};
  systemHandlers[BOOT_CHECK_JOB] = createBootCheckHandler({ registry, log });
  systemHandlers[HEALTH_CHECK_JOB] = createHealthCheckHandler({ registry, log });
  systemHandlers[NIGHTLY_JOB] = createNightlyHandler({
    redis,
    keys,
    registry,
    state,
    circuit,
    bus,
    log,
    timezone: config.nightlyTz,
    completedRetain: config.completedRetain,
  });
  const activeSystemJobs = new Set<string>();
  const systemWorker = createSystemWorker({ connection: bullConnection, keys, log, workerId, handlers: systemHandlers, activeJobs: activeSystemJobs });
  registerWorkerDrain(shutdown, systemWorker, { name: 'system worker', activeJobs: activeSystemJobs, isRedisUp: () => redis.status === 'ready' });
  await Promise.all([worker.waitUntilReady(), systemWorker.waitUntilReady()]);
  const closeServices = await startServices();
  shutdown.register(5, 'rpc and run cancellation', closeServices);
  memory.start();
  shutdown.register(1, 'memory monitor', () => {
    memory.stop();
    shedding.close();
  });
  const startedAt = new Date().toISOString();
  const heartbeat = new WorkerHeartbeat({
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
        concurrency: config.workerConcurrency,
        active: activeRuns.size,
        heapPercent,
        rssMB,
        heapUsedMB,
        isUnderMemoryPressure: memory.isUnderPressure,
        startedAt,
        version: WORKER_VERSION,
      };
    },
  });
  await heartbeat.start();
  shutdown.register(1, 'heartbeat timer', () => heartbeat.stop());
  shutdown.register(4, 'heartbeat removal and worker:offline', async () => {
    if (redis.status !== 'ready') {
      log.info('redis unavailable: this worker leaves the live list when its heartbeat expires');
      return;
    }
    await heartbeat.remove();
    await bus.publish('worker:offline', { workerId });
  });
  await bus.publish('worker:online', { workerId, concurrency: config.workerConcurrency, agents: registry.names() });
  isOnline = true;
  log.info({ workerId, concurrency: config.workerConcurrency, agents: registry.size, ...(http ? { httpPort: http.port } : {}) }, 'worker online');
}
