import {
  AgentStateStore,
  EventBus,
  createShards,
  checkShardLayout,
  ConfigError,
  ShardLayoutError,
  createLogger,
  createQueues,
  createRedisConnection,
  createProcessShutdown,
  closeRedisConnection,
  SCHEDULER_SHUTDOWN_STEPS,
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
  createSnapshotService,
  disableAgent,
  enableAgent,
  startBoot,
  triggerRun,
  bindPort,
  BootHealer,
  BOUNDED_RETRIES_PER_REQUEST,
  CRASH_GRACE_MS,
  installProcessFaultPolicy,
  RedisAvailability,
  requestBootCheck,
  createTriggerTracer,
  startTracing,
  backfill,
  pauseSchedule,
  pausedAmong,
  resumeSchedule,
} from '@werkpilot/shared';
import { createHttpApp } from './http/app.js';

/** How long a scheduler waits for the shard-layout check before it serves without it. */
const LAYOUT_CHECK_WAIT_MS = 1000;

/**
 * The scheduler role: loads config and registry, binds port 3001, connects, campaigns for the
 * leader lease and serves HTTP until a signal (or an uncaught exception, see process-faults.ts)
 * runs the graceful shutdown. Resolves once the HTTP server serves — with Redis down too: then
 * `/readyz` and the API answer 503 with the reason, and the lease is taken once Redis answers.
 */
export async function runScheduler(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'scheduler' });
  // The registry is validated before any connection is opened: an invalid one writes nothing.
  const fleet = await loadRegistry(config.agentsDir);
  // With several shards this scheduler plans and serves one (WERKPILOT_SHARD): its agents, its keys.
  const shards = createShards(fleet, config.prefix, config.shards);
  if (shards.count > 1 && config.shard === undefined) {
    throw new ConfigError(`WERKPILOT_SHARDS=${shards.count} needs WERKPILOT_SHARD (0 to ${shards.count - 1}) for a scheduler: each shard has its own (docs/operations.md#shards)`);
  }
  const { registry, keys, index: shardIndex } = shards.all[config.shard ?? 0]!;
  // Bound before anything connects or campaigns: a port clash exits 2 (one line naming the port and
  // PORT) without ever taking the leader lease.
  const http = await bindPort({ port: config.port, variable: 'PORT' });
  log.info({ agents: registry.size, layers: registry.layers.length, ...(shards.count > 1 ? { shard: shardIndex, shards: shards.count } : {}) }, 'registry loaded');
  if (shards.count > 1 && registry.size === 0) {
    const components = shards.placement.shards.reduce((sum, shard) => sum + shard.components.length, 0);
    log.warn(
      { shard: shardIndex, shards: shards.count, components },
      `shard ${shardIndex} has no agents: the agents form ${components} dependency component${components === 1 ? '' : 's'}, and one component is never split; fewer shards would do (werkpilot shards)`,
    );
  }

  const replicaId = makeWorkerId();
  // Only loaded when an OTLP endpoint is configured (tracing.ts).
  const tracing = config.tracing ? await startTracing({ settings: config.tracing, defaultServiceName: 'werkpilot-scheduler', log, instanceId: replicaId }) : undefined;
  const triggerTracer = tracing ? createTriggerTracer(tracing.tracer) : undefined;

  // Serves requests, not runs: its offline queue is bounded (see BOUNDED_RETRIES_PER_REQUEST).
  const redis = createRedisConnection({ target: config.redisTarget, role: 'scheduler', log }, { maxRetriesPerRequest: BOUNDED_RETRIES_PER_REQUEST });
  const bus = new EventBus({ redis, keys, log });
  // Cleanups are registered as each resource is acquired; within a step they run in reverse.
  const { shutdown, reportFault } = createProcessShutdown({
    log,
    graceMs: config.shutdownGraceMs,
    redis,
    bus,
    identity: { process: 'scheduler', pid: process.pid },
    faultIdentity: { process: 'scheduler' },
    stepNames: SCHEDULER_SHUTDOWN_STEPS,
    tracing,
  });
  installProcessFaultPolicy({ log, shutdown, crashGraceMs: Math.min(config.shutdownGraceMs, CRASH_GRACE_MS), onUnhandledRejection: reportFault });
  const queues = createQueues({ connection: redis, keys, telemetry: tracing?.telemetry });
  shutdown.register(5, 'queues', () => queues.close());
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

  const circuit = new CircuitBreaker({ redis, keys, log, windowMs: config.circuitWindowMs });
  const health = new HealthStore({ redis, keys });
  const reports = new ReportStore({ redis, keys });

  // Leader election: every replica serves HTTP; only the lease holder plans. Each duty starts with
  // `leader.confirm()` (a read of the lease), so a replica paused past the lease never acts on it.
  const leader = new LeaderElection({ redis, keys, log, id: replicaId, ttlMs: config.leaderLeaseMs });
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
  const bootDeps = {
    systemQueue: queues.system,
    registry,
    redis,
    keys,
    bus,
    log,
    checkTimeoutMs: config.healthCheckTimeoutMs,
    recheckBaseMs: config.bootRecheckMs,
    fence: leader.fence,
  };
  const healer = new BootHealer({ ...bootDeps, canAct: () => leader.confirm(), hasLiveWorker: () => hasLiveWorker({ redis, keys }) });
  const lead = async () => {
    // Redis may drop between election and setup (the connection fails fast): retry while leading.
    for (;;) {
      try {
        if (!(await leader.confirm())) return;
        // Before anything is planned in this layout: no run may be left under a prefix it drops.
        await checkShardLayout({ redis, fleetPrefix: config.prefix, shards, log, record: true });
        const paused = await pausedAmong({ redis, keys }, registry.names());
        await reconcileJobSchedulers({ queue: queues.agents, registry, retention, log, paused });
        await registerNightlySchedule(queues.system, { cron: config.nightlyCron, tz: config.nightlyTz });
        break;
      } catch (err) {
        if (err instanceof ShardLayoutError) {
          log.error(err.message);
          void shutdown.run('a shard layout change would strand runs', { exitCode: 2 });
          return;
        }
        if (!leader.isLeader) return;
        log.warn({ err }, 'leader setup failed; retrying in 1 s');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    monitor.start();
    // The healer starts after the boot: it re-checks what the boot failed or left undecided.
    void startBoot(bootDeps).then(() => {
      if (leader.isLeader) healer.start();
    });
  };

  // Its own connection, so a burst of API requests queued on `redis` does not read as a frozen Redis.
  const probe = createRedisConnection({ target: config.redisTarget, role: 'scheduler:probe', log }, { maxRetriesPerRequest: BOUNDED_RETRIES_PER_REQUEST });
  shutdown.register(6, 'redis probe connection', () => closeRedisConnection(probe));
  const availability = new RedisAvailability({ redis, probe });
  const snapshots = createSnapshotService({
    redis,
    keys,
    registry,
    queues,
    leader,
    agentHistograms: config.metricsAgentHistograms,
    restartWindowMs: config.circuitWindowMs,
    maxAgeMs: config.metricsSnapshotMaxAgeMs,
    log,
  });
  shutdown.register(5, 'metrics snapshot', () => snapshots.close());
  snapshots.warmUp();
  const app = createHttpApp({
    queues,
    registry,
    snapshots,
    resetCircuit: async (agent) => {
      await circuit.reset(agent);
      return (await circuit.get(agent)).state;
    },
    reports: { latest: () => reports.getLatest(), list: () => reports.list(), runNow: () => triggerNightly(queues.system) },
    trigger: (agent, options) =>
      triggerRun({ queue: queues.agents, registry, retention, redis, keys, idempotencyTtlMs: config.idempotencyTtlMs, ...(triggerTracer ? { tracer: triggerTracer } : {}) }, agent, options),
    schedules: {
      pause: (agent) => pauseSchedule({ redis, keys, queue: queues.agents, retention }, registry.require(agent)),
      resume: (agent) => resumeSchedule({ redis, keys, queue: queues.agents, retention }, registry.require(agent)),
    },
    backfill: (agent, from, to, data) => backfill({ queue: queues.agents, redis, keys, retention, registry }, agent, from, to, data),
    toggle: { enable: (agent) => enableAgent({ redis, keys }, agent), disable: (agent) => disableAgent({ redis, keys }, agent) },
    cancel: (runId, reason) => cancelRun({ queue: queues.agents, redis, keys, bus, registry, lockDurationMs: config.lockDurationMs, log }, runId, reason),
    boot: (agent) => requestBootCheck({ redis, keys }, agent),
    log,
    isReady: async () => (await availability.check()).available,
    redisAvailability: availability,
    redis,
    keys,
    bus,
    retention,
    credentials: { token: config.dashboardToken, user: config.dashboardUser, password: config.dashboardPassword },
    liveStreams: { maxClients: config.sseMaxClients },
    shards: { fleet: shards, served: shardIndex },
  });
  // Every replica checks the shard layout before it serves, so one of a refused layout takes no
  // trigger into prefixes that may be abandoned. With Redis slow or away it serves anyway after a
  // second (the leader checks again before it plans); a refusal exits 2 with its one line.
  // The check's outcome is a value, never a rejection: one that ends after the wait (a refusal the
  // leader then reports itself) must not surface as an unhandled rejection.
  const layoutCheck = checkShardLayout({ redis, fleetPrefix: config.prefix, shards, log, record: false }).then(
    () => 'checked' as const,
    (err: unknown) => (err instanceof ShardLayoutError ? err : ('unchecked' as const)),
  );
  const layoutOutcome = await Promise.race([layoutCheck, new Promise<'unchecked'>((resolve) => setTimeout(() => resolve('unchecked'), LAYOUT_CHECK_WAIT_MS).unref())]);
  if (layoutOutcome instanceof ShardLayoutError) throw layoutOutcome;
  if (layoutOutcome === 'unchecked') log.warn('could not check the shard layout before serving (Redis not answering); the leader checks it before planning');
  http.serve(app);
  shutdown.register(5, 'http server', () => http.close());
  log.info({ port: http.port }, `dashboard on http://localhost:${http.port}`);

  // Only now, serving, does it campaign. Not awaited: with Redis away the first attempt waits for it.
  const campaigning = leader.start({
    onElected: lead,
    onDeposed: () => {
      healer.stop();
      return monitor.stop();
    },
  });
  shutdown.register(1, 'leader lease, health monitor and boot healer', async () => {
    healer.stop();
    await monitor.stop();
    await campaigning;
    await leader.stop();
  });
}
