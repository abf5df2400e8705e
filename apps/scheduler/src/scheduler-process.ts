import type { Server } from 'node:http';
import {
  AgentStateStore,
  EventBus,
  createKeys,
  createLogger,
  createQueues,
  createRedisConnection,
  GracefulShutdown,
  closeRedisConnection,
  MemoryMonitor,
  loadConfig,
  loadRegistry,
  reconcileJobSchedulers,
  CircuitBreaker,
  HealthMonitor,
  HealthStore,
  LeaderElection,
  ReportStore,
  hasLiveWorker,
  disabledAmong,
  makeWorkerId,
  registerNightlySchedule,
  triggerNightly,
  cancelRun,
  clusterScrapeSources,
  disableAgent,
  enableAgent,
  startBoot,
  triggerRun,
  clusterSnapshotExtensions,
} from '@werkpilot/shared';
import { createHttpApp } from './http/app.js';

/**
 * The scheduler role: loads config and registry, connects, campaigns for the leader lease and serves
 * port 3001 until a signal runs the graceful shutdown. Resolves once the HTTP server listens.
 */
export async function runScheduler(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'scheduler' });
  // The registry is validated before any connection is opened: an invalid one writes nothing.
  const registry = await loadRegistry(config.agentsDir);
  log.info({ agents: registry.size, layers: registry.layers.length }, 'registry loaded');

  const keys = createKeys(config.prefix);
  const redis = createRedisConnection({ url: config.redisUrl, role: 'scheduler', log });
  // Cleanups are registered as each resource is acquired; within a step they run in reverse.
  const shutdown = new GracefulShutdown({
    log,
    graceMs: config.shutdownGraceMs,
    isRedisUp: () => redis.status === 'ready',
    publish: (type, data) => bus.publish(type, data),
    identity: { process: 'scheduler', pid: process.pid },
  });
  shutdown.listen();
  shutdown.register(6, 'redis connection', () => closeRedisConnection(redis));
  const queues = createQueues({ connection: redis, keys });
  shutdown.register(5, 'queues', () => queues.close());
  const bus = new EventBus({ redis, keys, log });
  shutdown.register(5, 'event bus', () => bus.close());
  const memory = new MemoryMonitor({
    log,
    intervalMs: config.memoryCheckIntervalMs,
    publish: (type, data) => bus.publish(type, data),
    identity: { process: 'scheduler', pid: process.pid },
  });
  memory.start();
  shutdown.register(1, 'memory monitor', () => memory.stop());
  const state = new AgentStateStore({ redis, keys });
  const retention = { dlqRetain: config.dlqRetain, completedRetain: config.completedRetain };

  const circuit = new CircuitBreaker({ redis, keys, log });
  const health = new HealthStore({ redis, keys });
  const reports = new ReportStore({ redis, keys });

  // Leader election: every replica serves HTTP; only the lease holder plans. Each duty starts with
  // `leader.confirm()` (a read of the lease), so a replica paused past the lease never acts on it.
  const leader: LeaderElection = new LeaderElection({
    redis,
    keys,
    log,
    id: makeWorkerId(),
    ttlMs: config.leaderLeaseMs,
    onElected: () => lead(),
    onDeposed: () => monitor.stop(),
  });
  const monitor = new HealthMonitor({
    registry,
    state,
    circuit,
    store: health,
    systemQueue: queues.system,
    connection: redis,
    log,
    hasLiveWorker: () => hasLiveWorker({ redis, keys }),
    disabledAgents: (agents) => disabledAmong({ redis, keys }, agents),
    canAct: () => leader.confirm(),
    intervalMs: config.healthIntervalMs,
    healthCheckTimeoutMs: config.healthCheckTimeoutMs,
  });
  const lead = async () => {
    if (!(await leader.confirm())) return;
    await reconcileJobSchedulers({ queue: queues.agents, registry, retention, log });
    void startBoot({ systemQueue: queues.system, registry, redis, keys, bus, log, checkTimeoutMs: config.healthCheckTimeoutMs });
    await registerNightlySchedule(queues.system, { cron: config.nightlyCron, tz: config.nightlyTz });
    monitor.start();
  };
  await leader.start();
  shutdown.register(1, 'leader lease and health monitor', async () => {
    await monitor.stop();
    await leader.stop();
  });

  const app = createHttpApp({
    snapshot: {
      queues,
      registry,
      state,
      extend: clusterSnapshotExtensions({ redis, keys, registry, circuit, health, leader }),
    },
    resetCircuit: async (agent) => {
      await circuit.reset(agent);
      return (await circuit.get(agent)).state;
    },
    reports: { latest: () => reports.getLatest(), list: () => reports.list(), runNow: () => triggerNightly(queues.system) },
    trigger: (agent, options) => triggerRun({ queue: queues.agents, registry, retention, redis, keys }, agent, options),
    toggle: { enable: (agent) => enableAgent({ redis, keys }, agent), disable: (agent) => disableAgent({ redis, keys }, agent) },
    cancel: (runId, reason) => cancelRun({ queue: queues.agents, redis, keys, bus }, runId, reason),
    scrapeSources: clusterScrapeSources({ keys, registry, replicaId: leader.id }),
    log,
    isReady: async () => (await redis.ping()) === 'PONG',
    redis,
    keys,
    bus,
    retention,
    credentials: { token: config.dashboardToken, user: config.dashboardUser, password: config.dashboardPassword },
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.port, () => resolve(s)).once('error', reject);
  });
  shutdown.register(5, 'http server', () => new Promise((resolve) => {
    server.close(resolve);
    server.closeAllConnections();
  }));
  log.info({ port: config.port }, `dashboard on http://localhost:${config.port}`);
}
