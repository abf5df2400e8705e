import { QueueEvents, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { HealthCheckResult } from '../agents/agent.js';
import type { AgentStateStore } from './agent-state.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { DEFAULT_HEALTH_CHECK_TIMEOUT_MS, HEALTH_CHECK_JOB } from './health-check-handler.js';
import { evaluateHealth, type HealthState } from './health-rating.js';
import type { HealthStore } from './health-store.js';
import type { Registry } from '../agents/registry.js';
import { runCheckOnWorker } from './worker-check-job.js';
import { duplicateRedisConnection } from '../redis/redis-connection.js';

/**
 * The health monitor: every HEALTH_INTERVAL_MS the scheduler leader rates each agent `healthy`,
 * `degraded` or `unhealthy`, with the reasons (health-rating.ts), stores it in Redis and publishes
 * `health:changed` when an agent's state changes (health-store.ts). Agents' own `healthCheck`s run
 * on a worker (the `system` queue job `health-check`, health-check-handler.ts), never in the
 * scheduler; dependents skip on an unhealthy dependency by health-gate.ts.
 */

export interface HealthMonitorOptions {
  registry: Registry;
  state: AgentStateStore;
  circuit: CircuitBreaker;
  store: HealthStore;
  /** The `system` queue, where agents' healthChecks are sent to a worker. */
  systemQueue: Queue;
  /** Duplicated (not used) for the QueueEvents listener that hears health-check jobs finish. */
  connection: Redis;
  log: Logger;
  /** Whether any worker is alive (heartbeat.ts `hasLiveWorker`). */
  hasLiveWorker: () => Promise<boolean>;
  /** The agents an operator disabled; none when not given. */
  disabledAgents?: (agents: readonly string[]) => Promise<Set<string>>;
  /**
   * Asked right before a round acts (and before it writes): a round runs only when it answers
   * true. The scheduler passes its leader lease check, so a paused ex-leader does not act.
   */
  canAct?: () => Promise<boolean>;
  intervalMs: number;
  /**
   * Delay of the first round after `start()`: min(intervalMs, 10 s) unless given, so workers
   * starting alongside the scheduler have heartbeated before anyone is rated "no live worker".
   */
  firstRoundDelayMs?: number;
  healthCheckTimeoutMs?: number;
  clock?: () => number;
}

/**
 * Rates every agent every `intervalMs` (the first round shortly after `start()`). Rounds never overlap.
 * Owns a QueueEvents connection (to hear health-check jobs finish), closed by `stop()`.
 */
export class HealthMonitor {
  private readonly options: HealthMonitorOptions;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly timeoutMs: number;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<unknown> | undefined;
  private events: QueueEvents | undefined;

  constructor(options: HealthMonitorOptions) {
    this.options = options;
    this.log = options.log.child({ component: 'health-monitor' });
    this.clock = options.clock ?? Date.now;
    this.timeoutMs = options.healthCheckTimeoutMs ?? DEFAULT_HEALTH_CHECK_TIMEOUT_MS;
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      if (this.round) return;
      this.round = this.checkAll()
        .catch((err: unknown) => this.log.warn({ err }, 'health round failed'))
        .finally(() => (this.round = undefined));
    };
    const firstDelay = this.options.firstRoundDelayMs ?? Math.min(this.options.intervalMs, 10_000);
    // One timer at a time: the first round after `firstDelay`, then every interval.
    this.timer = setTimeout(() => {
      tick();
      if (this.timer) this.timer = setInterval(tick, this.options.intervalMs).unref();
    }, firstDelay).unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    clearInterval(this.timer);
    this.timer = undefined;
    await this.round;
    const events = this.events;
    this.events = undefined;
    await events?.close();
  }

  /**
   * One round: gathers state, circuits, workers and healthChecks, rates every agent and stores
   * the ratings. Returns the ratings, or null when `canAct` said no.
   */
  async checkAll(): Promise<Map<string, { state: HealthState; reasons: string[] }> | null> {
    const o = this.options;
    if (o.canAct && !(await o.canAct())) return null;
    const names = o.registry.names();
    const [states, circuits, disabled, isAnyWorkerLive] = await Promise.all([
      o.state.getMany(names),
      o.circuit.getMany(names),
      o.disabledAgents ? o.disabledAgents(names) : Promise.resolve(new Set<string>()),
      o.hasLiveWorker(),
    ]);
    const withChecks = o.registry.list().filter((spec) => spec.definition.healthCheck && !disabled.has(spec.name));
    // Without a live worker the checks could only time out; "no live worker" already says why.
    const checks = isAnyWorkerLive
      ? new Map(await Promise.all(withChecks.map(async (spec) => [spec.name, await this.runHealthCheck(spec.name)] as const)))
      : new Map<string, HealthCheckResult>();

    const now = this.clock();
    const ratings = new Map<string, { state: HealthState; reasons: string[] }>();
    for (const spec of o.registry.list()) {
      const check = checks.get(spec.name);
      ratings.set(
        spec.name,
        evaluateHealth({
          spec,
          state: states.get(spec.name)!,
          circuit: circuits.get(spec.name)!,
          isDisabled: disabled.has(spec.name),
          hasLiveWorker: isAnyWorkerLive,
          ...(check ? { healthCheck: check } : {}),
          now,
        }),
      );
    }
    if (o.canAct && !(await o.canAct())) return null;
    const changed = await o.store.write(ratings, now);
    const counts = { healthy: 0, degraded: 0, unhealthy: 0 };
    for (const rating of ratings.values()) counts[rating.state] += 1;
    this.log.info(counts, 'health round');
    if (changed.length > 0) this.log.info({ changed: Object.fromEntries(changed.map((a) => [a, ratings.get(a)!.state])) }, 'health changed');
    return ratings;
  }

  /** Runs the agent's healthCheck on a worker; a failure, an error or no answer in time is unhealthy. */
  async runHealthCheck(agent: string): Promise<HealthCheckResult> {
    const outcome = await runCheckOnWorker(this.options.systemQueue, await this.queueEvents(), {
      name: HEALTH_CHECK_JOB,
      data: { agent, timeoutMs: this.timeoutMs },
      opts: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
      waitMs: this.timeoutMs + 1000,
    });
    if (outcome.kind === 'timed-out') return { healthy: false, reason: `timed out after ${this.timeoutMs} ms` };
    if (outcome.kind === 'error') return { healthy: false, reason: outcome.message };
    const { result } = outcome;
    return { healthy: Boolean(result?.healthy), ...(result?.reason ? { reason: result.reason } : {}) };
  }

  private async queueEvents(): Promise<QueueEvents> {
    if (!this.events) {
      const queue = this.options.systemQueue;
      // A template BullMQ copies for its blocking connection (it never connects itself): that one
      // must wait through reconnects (maxRetriesPerRequest null) whatever the scheduler's does.
      const connection = duplicateRedisConnection(this.options.connection, 'health-events', { lazyConnect: true, maxRetriesPerRequest: null });
      this.events = new QueueEvents(queue.name, { connection, prefix: queue.opts.prefix! });
      this.events.on('error', () => {});
    }
    await this.events.waitUntilReady();
    return this.events;
  }
}
