import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import {
  AgentStateStore,
  EventBus,
  createAgentWorker,
  createRunMetricsRecorder,
  createWorkerMetrics,
  CircuitBreaker,
  HealthStore,
  dependencyHealthRule,
  ownCircuitRule,
  HEALTH_CHECK_JOB,
  NIGHTLY_JOB,
  createHealthCheckHandler,
  createNightlyHandler,
  skipCauseListener,
  createSystemWorker,
  type SystemJobHandler,
  createKeys,
  createLogger,
  createRedisConnection,
  GracefulShutdown,
  closeRedisConnection,
  MemoryMonitor,
  WorkerHeartbeat,
  readProcessMemory,
  registerWorkerDrain,
  loadConfig,
  loadRegistry,
  makeWorkerId,
  runProcess,
  BOOT_CHECK_JOB,
  agentToggleRules,
  bootGateRules,
  createBootCheckHandler,
  createRunAdmission,
  createRunGate,
  RpcClient,
  startRpcResponder,
  startRunCancelListener,
} from '@werkpilot/shared';
import { startWorkerHttp } from './worker-http.js';

const WORKER_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

runProcess('werkpilot worker', async () => {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'worker' });
  const registry = await loadRegistry(config.agentsDir);
  const workerId = makeWorkerId();

  const keys = createKeys(config.prefix);
  const redis = createRedisConnection({ url: config.redisUrl, role: 'worker', log });
  // Cleanups are registered as each resource is acquired; within a step they run in reverse.
  const shutdown = new GracefulShutdown({
    log,
    graceMs: config.shutdownGraceMs,
    isRedisUp: () => redis.status === 'ready',
    publish: (type, data) => bus.publish(type, data),
    identity: { process: 'worker', workerId },
  });
  shutdown.listen();
  shutdown.register(6, 'redis connection', () => closeRedisConnection(redis));
  const bus = new EventBus({ redis, keys, log });
  shutdown.register(5, 'event bus', () => bus.close());
  const state = new AgentStateStore({ redis, keys });
  const memory = new MemoryMonitor({
    log,
    intervalMs: config.memoryCheckIntervalMs,
    publish: (type, data) => bus.publish(type, data),
    identity: { process: 'worker', workerId },
  });
  const activeRuns = new Set<string>();
  // Dependency health gating: one list of rules (gating.ts); each capability adds its own here.
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
  const admission = createRunAdmission({ redis, keys, log });
  shutdown.register(5, 'run admission', () => admission.close());
  const metrics = createWorkerMetrics({ activeRuns: () => activeRuns.size });
  const rpc = new RpcClient({ redis, keys, log });
  const worker = createAgentWorker({
    request: (from, agent, payload, options) => rpc.request(agent, payload, { ...options, from }),
    connection: redis,
    redis,
    keys,
    registry,
    state,
    bus,
    log,
    workerId,
    concurrency: config.workerConcurrency,
    gates: [gate],
    admission,
    outcomeListeners: [
      circuit.outcomeListener((agent) => registry.get(agent)?.maxRestartsPerHour),
      skipCauseListener(keys),
      // Cluster-wide exported figures (duration buckets, retries, timeouts) in Redis, and this process's own.
      createRunMetricsRecorder({ redis, keys }),
      metrics.outcomeListener,
    ],
    handBack: memory.handBack,
    activeRuns,
    lockDurationMs: config.lockDurationMs,
    stalledIntervalMs: config.stalledIntervalMs,
  });
  registerWorkerDrain(shutdown, worker, { name: 'agents worker', activeJobs: activeRuns, isRedisUp: () => redis.status === 'ready' });
  // Internal jobs by name; each capability registers its handler here.
  const systemHandlers: Record<string, SystemJobHandler> = {};
  systemHandlers[BOOT_CHECK_JOB] = createBootCheckHandler({ registry, log });
  systemHandlers[HEALTH_CHECK_JOB] = createHealthCheckHandler({ registry, log });
  systemHandlers[NIGHTLY_JOB] = createNightlyHandler({
    redis, keys, registry, state, circuit, bus, log, timezone: config.nightlyTz, completedRetain: config.completedRetain,
  });
  const activeSystemJobs = new Set<string>();
  const systemWorker = createSystemWorker({ connection: redis, keys, log, workerId, handlers: systemHandlers, activeJobs: activeSystemJobs });
  registerWorkerDrain(shutdown, systemWorker, { name: 'system worker', activeJobs: activeSystemJobs, isRedisUp: () => redis.status === 'ready' });
  await Promise.all([worker.waitUntilReady(), systemWorker.waitUntilReady()]);
  const responder = startRpcResponder({ redis, keys, log, agents: registry.list(), workerId });
  const cancelListener = await startRunCancelListener({ redis, keys, log, worker, workerId });
  shutdown.register(5, 'rpc and run cancellation', () => Promise.all([responder.close(), cancelListener.close(), rpc.close()]));
  memory.start();
  shutdown.register(1, 'memory monitor', () => memory.stop());
  const startedAt = new Date().toISOString();
  const heartbeat = new WorkerHeartbeat({
    redis,
    keys,
    log,
    intervalMs: config.heartbeatIntervalMs,
    describe: () => {
      const { heapPercent, rssMB, heapUsedMB } = readProcessMemory();
      return { id: workerId, host: hostname(), pid: process.pid, concurrency: config.workerConcurrency, active: activeRuns.size,
        heapPercent, rssMB, heapUsedMB, isUnderMemoryPressure: memory.isUnderPressure, startedAt, version: WORKER_VERSION };
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
  log.info({ workerId, concurrency: config.workerConcurrency, agents: registry.size }, 'worker online');

  if (config.workerHttpPort > 0) {
    const listening = await startWorkerHttp({ port: config.workerHttpPort, workerId, metrics, isRunning: () => worker.isRunning() });
    shutdown.register(5, 'http server', () => new Promise((resolve) => {
      listening.close(resolve);
      listening.closeAllConnections();
    }));
  }
});
