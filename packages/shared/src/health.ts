import { QueueEvents, UnrecoverableError, type Queue } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import { isWaitTimeoutError } from './bullmq-errors.js';
import { BUS_EMIT_LUA, BUS_HISTORY_LENGTH } from './bus.js';
import type { AgentSpec, HealthCheckResult } from './agent.js';
import type { AgentState, AgentStateStore } from './agent-state.js';
import type { CircuitBreaker, CircuitStatus } from './circuit-breaker.js';
import { cronIntervalMs } from './cron.js';
import { dependencyRule, type GateRule } from './gating.js';
import { healthKey, type Keys } from './keys.js';
import { runInScope } from './process-faults.js';
import { execOrThrow } from './redis-pipeline.js';
import { MAX_ERROR_MESSAGE_BYTES, truncateBytes } from './size-limits.js';
import type { Registry } from './registry.js';
import { addGenerationBumpTo } from './snapshot-changes.js';
import type { SystemJobHandler } from './system-worker.js';
import { defineScripts } from './redis-scripts.js';

/**
 * The health monitor: every HEALTH_INTERVAL_MS the scheduler leader rates each agent `healthy`,
 * `degraded` or `unhealthy`, with the reasons, stores it in Redis and publishes `health:changed`
 * when an agent's state changes. Agents' own `healthCheck`s run on a worker (the `system` queue
 * job `health-check`), never in the scheduler.
 */

export type HealthState = 'healthy' | 'degraded' | 'unhealthy';

export interface AgentHealth {
  /** null until the monitor has rated the agent once. */
  state: HealthState | null;
  reasons: string[];
  checkedAt: string | null;
}

/** Thresholds of the health monitor (docs/design.md#health-monitor). */
export const HEALTH_RULES = {
  consecutiveFailures: 3,
  staleScheduleIntervals: 3,
  minSuccessRate: 0.9,
  maxP95OfTimeout: 0.8,
} as const;

export const HEALTH_CHECK_JOB = 'health-check';
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 10_000;

/** Everything one rating looks at, gathered by the monitor (or a test). */
export interface HealthInputs {
  spec: Pick<AgentSpec, 'name' | 'schedule' | 'timeoutMs'>;
  state: Pick<AgentState, 'consecutiveFailures' | 'lastSuccessAt' | 'recentSuccessRate' | 'recentRuns' | 'p95'>;
  circuit: Pick<CircuitStatus, 'state'>;
  isDisabled: boolean;
  hasLiveWorker: boolean;
  /** The agent's healthCheck outcome; undefined when it has none (or it was not run). */
  healthCheck?: HealthCheckResult;
  now: number;
}

/** Rates one agent by the rules of docs/design.md#health-monitor. Pure: the same inputs always give the same answer. */
export function evaluateHealth(input: HealthInputs): { state: HealthState; reasons: string[] } {
  const unhealthy: string[] = [];
  const degraded: string[] = [];
  const { spec, state } = input;

  if (input.isDisabled) unhealthy.push('disabled');
  if (input.circuit.state === 'open') unhealthy.push('circuit open');
  if (input.circuit.state === 'half-open') unhealthy.push('circuit half-open');
  if (state.consecutiveFailures >= HEALTH_RULES.consecutiveFailures) unhealthy.push(`${state.consecutiveFailures} consecutive failures`);
  if (input.healthCheck && !input.healthCheck.healthy) unhealthy.push(`healthCheck failed: ${input.healthCheck.reason ?? 'no reason given'}`);
  if (!input.hasLiveWorker) unhealthy.push('no live worker');
  if (spec.schedule && state.lastSuccessAt) {
    const limit = HEALTH_RULES.staleScheduleIntervals * cronIntervalMs(spec.schedule.cron, spec.schedule.tz, new Date(input.now));
    const age = input.now - Date.parse(state.lastSuccessAt);
    if (age > limit) unhealthy.push(`last success ${formatMs(age)} ago, over ${HEALTH_RULES.staleScheduleIntervals} schedule intervals (${formatMs(limit)})`);
  }

  if (state.recentSuccessRate !== null && state.recentSuccessRate < HEALTH_RULES.minSuccessRate) {
    degraded.push(`success rate ${Math.round(state.recentSuccessRate * 100)}% over the last ${state.recentRuns} runs (under ${HEALTH_RULES.minSuccessRate * 100}%)`);
  }
  if (state.p95 !== null && state.p95 > HEALTH_RULES.maxP95OfTimeout * spec.timeoutMs) {
    degraded.push(`p95 ${state.p95} ms is over ${HEALTH_RULES.maxP95OfTimeout * 100}% of timeoutMs ${spec.timeoutMs} ms`);
  }

  if (unhealthy.length > 0) return { state: 'unhealthy', reasons: [...unhealthy, ...degraded] };
  if (degraded.length > 0) return { state: 'degraded', reasons: degraded };
  return { state: 'healthy', reasons: [] };
}

/** Whether a reason only degrades an agent (it never makes a dependency skip). */
export function isDegradedReason(reason: string): boolean {
  return reason.startsWith('success rate ') || reason.startsWith('p95 ');
}

function formatMs(ms: number): string {
  if (ms >= 3_600_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  if (ms >= 60_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Stores a rating and publishes `health:changed` when the state differs from the stored one.
 * Invariant: compare and write are one step, so however many monitors rate an agent, each change
 * is published once with the state it really replaced. An agent never rated counts as healthy.
 * A change the gate can see (becoming or ceasing to be unhealthy, an unhealthy agent's reasons) bumps the gate epoch.
 * KEYS: health hash, events stream, gate epoch. ARGV: state, reasonsJson, checkedAt, channel, maxlen, agent, atIso.
 * Returns 1 when the state changed.
 */
const WRITE_HEALTH_LUA = `${BUS_EMIT_LUA}
local health, stream = KEYS[1], KEYS[2]
local state, reasons, checkedAt = ARGV[1], ARGV[2], ARGV[3]
local stored = redis.call('HMGET', health, 'state', 'reasons')
local previous = stored[1] or 'healthy'
local previousReasons = stored[2] or '[]'
redis.call('HSET', health, 'state', state, 'reasons', reasons, 'checkedAt', checkedAt)
if (previous == 'unhealthy') ~= (state == 'unhealthy') or (state == 'unhealthy' and previousReasons ~= reasons) then
  redis.call('INCR', KEYS[3])
end
if previous == state then return 0 end
-- reasons are stored as JSON text: passed through as they are (see emitDataJson).
local data = '{"from":' .. cjson.encode(previous) .. ',"to":' .. cjson.encode(state) ..
  ',"reasons":' .. reasons .. ',"previousReasons":' .. previousReasons .. '}'
emitDataJson(stream, ARGV[4], ARGV[5], 'health:changed', ARGV[6], ARGV[7], data)
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotWriteHealth(health: string, stream: string, epoch: string, ...args: (string | number)[]): Result<number, Context>;
  }
}

/** Reads and writes agents' health records. */
export class HealthStore {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly historyLength: number;

  constructor({ redis, keys, historyLength = BUS_HISTORY_LENGTH }: { redis: Redis; keys: Keys; historyLength?: number }) {
    this.redis = redis;
    this.keys = keys;
    this.historyLength = historyLength;
    defineScripts(redis, { 'werkpilotWriteHealth-3': WRITE_HEALTH_LUA });
  }

  /** Stores each rating; returns the agents whose state changed (each published `health:changed`). */
  async write(ratings: Map<string, { state: HealthState; reasons: string[] }>, now: number): Promise<string[]> {
    if (ratings.size === 0) return [];
    const pipeline = this.redis.pipeline();
    const agents = [...ratings.keys()];
    for (const agent of agents) {
      const rating = ratings.get(agent)!;
      pipeline.werkpilotWriteHealth(
        healthKey(this.keys, agent),
        this.keys.eventsStream,
        this.keys.gateEpoch,
        rating.state,
        JSON.stringify(rating.reasons),
        now,
        this.keys.eventsChannel,
        this.historyLength,
        agent,
        new Date(now).toISOString(),
      );
    }
    // Every rating rewrites checkedAt: the snapshot re-reads health whole when the generation moves.
    addGenerationBumpTo(pipeline, this.keys, 'health');
    const replies = await execOrThrow(pipeline);
    return agents.filter((_, i) => replies[i] === 1);
  }

  async getMany(agents: readonly string[]): Promise<Map<string, AgentHealth>> {
    const pipeline = this.redis.pipeline();
    for (const agent of agents) pipeline.hmget(healthKey(this.keys, agent), 'state', 'reasons', 'checkedAt');
    const replies = await execOrThrow(pipeline);
    const result = new Map<string, AgentHealth>();
    agents.forEach((agent, i) => {
      const [state, reasons, checkedAt] = replies[i] as (string | null)[];
      result.set(agent, {
        state: (state as HealthState | null) ?? null,
        reasons: reasons ? (JSON.parse(reasons) as string[]) : [],
        checkedAt: checkedAt ? new Date(Number(checkedAt)).toISOString() : null,
      });
    });
    return result;
  }
}

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
        .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'health round failed'))
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
    const events = await this.queueEvents();
    const job = await this.options.systemQueue.add(
      HEALTH_CHECK_JOB,
      { agent, timeoutMs: this.timeoutMs },
      { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } },
    );
    try {
      const result = (await job.waitUntilFinished(events, this.timeoutMs + 1000)) as HealthCheckResult;
      return { healthy: Boolean(result?.healthy), ...(result?.reason ? { reason: result.reason } : {}) };
    } catch (err) {
      const message = (err as Error).message;
      if (isWaitTimeoutError(err)) {
        await job.remove().catch(() => {}); // still waiting for a worker: it is of no use any more
        return { healthy: false, reason: `timed out after ${this.timeoutMs} ms` };
      }
      return { healthy: false, reason: message };
    }
  }

  private async queueEvents(): Promise<QueueEvents> {
    if (!this.events) {
      const queue = this.options.systemQueue;
      // A template BullMQ copies for its blocking connection (it never connects itself): that one
      // must wait through reconnects (maxRetriesPerRequest null) whatever the scheduler's does.
      const connection = this.options.connection.duplicate({ lazyConnect: true, maxRetriesPerRequest: null });
      this.events = new QueueEvents(queue.name, { connection, prefix: queue.opts.prefix! });
      this.events.on('error', () => {});
    }
    await this.events.waitUntilReady();
    return this.events;
  }
}

/**
 * The worker side of a health check: runs the agent's `healthCheck` with an AbortSignal that fires
 * after the job's `timeoutMs`. A throw or a timeout answers unhealthy (never a failed job), so the
 * monitor hears the reason.
 */
export function createHealthCheckHandler({ registry, log }: { registry: Registry; log: Logger }): SystemJobHandler {
  return async (job, bullSignal) => {
    const { agent, timeoutMs = DEFAULT_HEALTH_CHECK_TIMEOUT_MS } = job.data as { agent: string; timeoutMs?: number };
    const spec = registry.get(agent);
    if (!spec) throw new UnrecoverableError(`unknown agent ${agent}`);
    const check = spec.definition.healthCheck;
    if (!check) return { healthy: true };
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = bullSignal ? AbortSignal.any([timeout, bullSignal]) : timeout;
    const scoped = log.child({ agent, component: 'health-check' });
    try {
      const result = await new Promise<HealthCheckResult>((resolve, reject) => {
        signal.addEventListener('abort', () => reject(new Error(`timed out after ${timeoutMs} ms`)), { once: true });
        Promise.resolve()
          .then(() => runInScope({ agent, activity: 'health-check' }, () => check({ signal, log: scoped })))
          .then(resolve, reject);
      });
      return { healthy: result?.healthy === true, ...(result?.reason ? { reason: truncateBytes(String(result.reason), MAX_ERROR_MESSAGE_BYTES) } : {}) };
    } catch (err) {
      const message = truncateBytes((err as Error)?.message ?? String(err), MAX_ERROR_MESSAGE_BYTES);
      return { healthy: false, reason: signal.aborted ? message : `threw: ${message}` };
    }
  };
}

/**
 * Gate rule: a dependency whose circuit is open (or half-open), or which the monitor rated
 * unhealthy, skips the run: `dependency crm-sync unhealthy: circuit open`. The circuit is taken from
 * its own state (an operator's reset takes effect at once); the stored rating's circuit and
 * `disabled` reasons are therefore ignored (the toggle rule reads `disabled` itself), so a stale
 * rating cannot keep skipping after a reset, and degraded-only reasons never skip.
 */
export function dependencyHealthRule(): GateRule {
  return dependencyRule((dep, { view }) => {
    const { circuit, health } = view.of(dep);
    if (circuit === 'open') return 'unhealthy: circuit open';
    if (circuit === 'half-open') return 'unhealthy: circuit half-open';
    if (health.state !== 'unhealthy') return null;
    const reasons = health.reasons.filter((r) => !isCoveredLive(r) && !isDegradedReason(r));
    return reasons.length > 0 ? `unhealthy: ${reasons.join(', ')}` : null;
  });
}

/**
 * Reasons a stored rating must not skip a dependent for: the circuit and `disabled` are read live
 * (here and in agent-toggle.ts), and `no live worker` is false by definition on the worker asking.
 */
function isCoveredLive(reason: string): boolean {
  return reason.startsWith('circuit ') || reason === 'disabled' || reason === 'no live worker';
}

