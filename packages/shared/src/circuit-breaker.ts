import { randomBytes } from 'node:crypto';
import type { ChainableCommander, Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from './agent.js';
import type { RunRecord } from './agent-state.js';
import type { OutcomeListener } from './agent-executor.js';
import type { GateRule } from './gating.js';
import type { Keys } from './keys.js';
import type { MetricsSnapshot } from './metrics-snapshot.js';
import { execOrThrow } from './redis-pipeline.js';

/**
 * The circuit breaker, cluster-wide. A restart is a failed attempt of an agent (one that will be
 * retried, or one that failed the run for good). Restarts are kept in a rolling one-hour window in
 * Redis shared by every worker; more than `maxRestartsPerHour` of them opens the agent's circuit
 * and its runs are skipped with reason `circuit open`. After the cooldown (by default: until the
 * window has dropped back to the limit) exactly one trial run is let through (half-open); its
 * success closes the circuit, its failure reopens it.
 *
 * Every transition happens inside one Lua script together with its bus event, so two workers can
 * never both open a circuit, both take the trial, or publish an event for a change that did not
 * happen.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitStatus {
  state: CircuitState;
  /** Restarts in the rolling hour, as of the read. */
  restartsLastHour: number;
  /** When the circuit last opened (ISO-8601), while it is open or half-open. */
  openedAt: string | null;
  /** The run holding the half-open trial, if any. */
  trialRunId: string | null;
}

/** Skip reasons the breaker gives for the agent's own circuit (exact strings). */
export const CIRCUIT_OPEN_REASON = 'circuit open';
export const CIRCUIT_TRIAL_BUSY_REASON = 'circuit half-open: a trial run is in progress';

export const RESTART_WINDOW_MS = 60 * 60 * 1000;

export interface CircuitBreakerOptions {
  redis: Redis;
  keys: Keys;
  log?: Logger;
  clock?: () => number;
  /** Length of the rolling window restarts are counted in; one hour unless a test shortens it. */
  windowMs?: number;
  /**
   * Minimum time an open circuit stays open before its trial run. Unset (the default): until the
   * rolling window holds no more than `maxRestartsPerHour` restarts.
   */
  cooldownMs?: number;
  /** Bus history length (the XADD cap), as the EventBus keeps it. */
  historyLength?: number;
}

/** The agent's circuit hash: state, openedAt, openCount, trialRunId, trialStartedAt, restartsTotal. */
export function circuitKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'circuit');
}

/** Sorted set of the agent's restarts in the rolling window, scored by when they happened (ms). */
export function restartsKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'restarts');
}

/** Emits a bus event from inside a script: PUBLISH on the channel and XADD to the capped history. */
const EMIT_LUA = `
local function emit(stream, channel, maxlen, kind, agent, at, data)
  local json = cjson.encode({ type = kind, agent = agent, at = at, data = data })
  redis.call('PUBLISH', channel, json)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', json)
end
`;

/**
 * Applies one run outcome to the circuit.
 * Invariants: the restart is counted and the open/close decision taken on the same count (no
 * other worker's restart can slip between); a circuit opens once per crossing, so `circuit:opened`
 * is published once; only the trial run's outcome moves a half-open circuit.
 * KEYS: restarts zset, circuit hash, events stream.
 * ARGV: outcome, now, windowMs, max, member, runId, channel, maxlen, agent, atIso, skippedByOwnCircuit.
 * Returns the restart count in the window.
 */
const RECORD_OUTCOME_LUA = `${EMIT_LUA}
local restarts, circuit, stream = KEYS[1], KEYS[2], KEYS[3]
local outcome, now, window, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local runId, channel, maxlen, agent, at = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local state = redis.call('HGET', circuit, 'state') or 'closed'
local isTrial = state == 'half-open' and runId ~= '' and redis.call('HGET', circuit, 'trialRunId') == runId
redis.call('ZREMRANGEBYSCORE', restarts, '-inf', now - window)
if outcome == 'failure' then
  redis.call('ZADD', restarts, now, ARGV[5])
  redis.call('PEXPIRE', restarts, window)
  redis.call('HINCRBY', circuit, 'restartsTotal', 1)
end
local count = redis.call('ZCARD', restarts)
if outcome == 'failure' then
  if isTrial then
    redis.call('HSET', circuit, 'state', 'open', 'openedAt', now, 'openCount', count)
    redis.call('HDEL', circuit, 'trialRunId', 'trialStartedAt')
    emit(stream, channel, maxlen, 'circuit:opened', agent, at, { count = count, maxRestartsPerHour = max, reason = 'trial run failed', runId = runId })
  elseif state == 'closed' and count > max then
    redis.call('HSET', circuit, 'state', 'open', 'openedAt', now, 'openCount', count)
    emit(stream, channel, maxlen, 'circuit:opened', agent, at, { count = count, maxRestartsPerHour = max })
  end
elseif outcome == 'success' and isTrial then
  redis.call('HSET', circuit, 'state', 'closed')
  redis.call('HDEL', circuit, 'openedAt', 'openCount', 'trialRunId', 'trialStartedAt')
  emit(stream, channel, maxlen, 'circuit:closed', agent, at, { reason = 'trial run succeeded', runId = runId, restartsLastHour = count })
elseif outcome == 'skipped' and isTrial and ARGV[11] ~= '1' then
  -- The trial was skipped by another rule (a dependency, overlap): give the trial back.
  redis.call('HSET', circuit, 'state', 'open')
  redis.call('HDEL', circuit, 'trialRunId', 'trialStartedAt')
end
return count
`;

/**
 * Decides whether a run may start under the agent's circuit.
 * Invariant: at most one run holds the half-open trial at a time, across all workers — the
 * transition open → half-open and the claim of the trial are the same atomic step. A trial whose
 * holder vanished (no outcome within `staleAfterMs`) is handed to the next run.
 * KEYS: restarts zset, circuit hash. ARGV: now, windowMs, max, cooldownMs ('' = window rule), runId, staleAfterMs.
 * Returns 'closed' | 'trial' | 'open' | 'busy'.
 */
const ADMIT_LUA = `
local restarts, circuit = KEYS[1], KEYS[2]
local now, window, max, cooldown, runId, staleAfter = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
local state = redis.call('HGET', circuit, 'state')
if not state or state == 'closed' then return 'closed' end
if state == 'half-open' then
  if redis.call('HGET', circuit, 'trialRunId') == runId then return 'trial' end
  local started = tonumber(redis.call('HGET', circuit, 'trialStartedAt') or '0')
  if now - started < staleAfter then return 'busy' end
  redis.call('HSET', circuit, 'trialRunId', runId, 'trialStartedAt', now)
  return 'trial'
end
redis.call('ZREMRANGEBYSCORE', restarts, '-inf', now - window)
local cooled
if cooldown == '' then
  cooled = redis.call('ZCARD', restarts) <= max
else
  cooled = now - tonumber(redis.call('HGET', circuit, 'openedAt') or '0') >= tonumber(cooldown)
end
if not cooled then return 'open' end
redis.call('HSET', circuit, 'state', 'half-open', 'trialRunId', runId, 'trialStartedAt', now)
return 'trial'
`;

/**
 * Closes the circuit and forgets the window's restarts (operator reset).
 * KEYS: restarts zset, circuit hash, events stream. ARGV: channel, maxlen, agent, atIso.
 * Returns the state it was in.
 */
const RESET_LUA = `${EMIT_LUA}
local restarts, circuit, stream = KEYS[1], KEYS[2], KEYS[3]
local previous = redis.call('HGET', circuit, 'state') or 'closed'
redis.call('DEL', restarts)
redis.call('HSET', circuit, 'state', 'closed')
redis.call('HDEL', circuit, 'openedAt', 'openCount', 'trialRunId', 'trialStartedAt')
if previous ~= 'closed' then
  emit(stream, ARGV[1], ARGV[2], 'circuit:closed', ARGV[3], ARGV[4], { reason = 'manual reset', previous = previous })
end
return previous
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotCircuitRecord(restarts: string, circuit: string, stream: string, ...args: (string | number)[]): Result<number, Context>;
    werkpilotCircuitAdmit(restarts: string, circuit: string, ...args: (string | number)[]): Result<string, Context>;
    werkpilotCircuitReset(restarts: string, circuit: string, stream: string, ...args: (string | number)[]): Result<string, Context>;
  }
}

export type AdmitDecision = 'closed' | 'trial' | 'open' | 'busy';

export class CircuitBreaker {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly log: Logger | undefined;
  private readonly clock: () => number;
  private readonly windowMs: number;
  private readonly cooldownMs: number | undefined;
  private readonly historyLength: number;

  constructor(options: CircuitBreakerOptions) {
    this.redis = options.redis;
    this.keys = options.keys;
    this.log = options.log?.child({ component: 'circuit-breaker' });
    this.clock = options.clock ?? Date.now;
    this.windowMs = options.windowMs ?? RESTART_WINDOW_MS;
    this.cooldownMs = options.cooldownMs;
    this.historyLength = options.historyLength ?? 1000;
    const redis = this.redis as Partial<Redis>;
    if (typeof redis.werkpilotCircuitRecord !== 'function') {
      this.redis.defineCommand('werkpilotCircuitRecord', { numberOfKeys: 3, lua: RECORD_OUTCOME_LUA });
      this.redis.defineCommand('werkpilotCircuitAdmit', { numberOfKeys: 2, lua: ADMIT_LUA });
      this.redis.defineCommand('werkpilotCircuitReset', { numberOfKeys: 3, lua: RESET_LUA });
    }
  }

  /**
   * Queues the effect of one run outcome on a pipeline the caller executes (the executor's
   * outcome pipeline, so state, circuit and events travel in one round trip). Needs the agent's
   * `maxRestartsPerHour`, hence the spec lookup.
   */
  addOutcomeTo(pipeline: ChainableCommander, record: RunRecord, maxRestartsPerHour: number): void {
    const now = this.clock();
    pipeline.werkpilotCircuitRecord(
      restartsKey(this.keys, record.agent),
      circuitKey(this.keys, record.agent),
      this.keys.eventsStream,
      record.outcome,
      now,
      this.windowMs,
      maxRestartsPerHour,
      `${now}:${randomBytes(6).toString('hex')}`,
      record.runId ?? '',
      this.keys.eventsChannel,
      this.historyLength,
      record.agent,
      new Date(now).toISOString(),
      record.outcome === 'skipped' && isSkippedByOwnCircuit(record.error) ? '1' : '0',
    );
  }

  /** Records one outcome on its own round trip; returns the restarts in the window. */
  async record(record: RunRecord, maxRestartsPerHour: number): Promise<number> {
    const pipeline = this.redis.pipeline();
    this.addOutcomeTo(pipeline, record, maxRestartsPerHour);
    const [count] = await execOrThrow(pipeline);
    return count as number;
  }

  /** The executor's outcome listener: every recorded run moves the circuit of its agent. */
  outcomeListener(maxRestartsOf: (agent: string) => number | undefined): OutcomeListener {
    return (record, pipeline) => {
      const max = maxRestartsOf(record.agent);
      if (max !== undefined) this.addOutcomeTo(pipeline, record, max);
    };
  }

  /**
   * Asks whether run `runId` of `spec` may start: `closed` (normal), `trial` (this run is the
   * half-open trial), `open` or `busy` (skip it). Mutates: may move open → half-open.
   */
  async admit(spec: Pick<AgentSpec, 'name' | 'maxRestartsPerHour' | 'timeoutMs' | 'retry'>, runId: string): Promise<AdmitDecision> {
    // A trial holder that died is noticed after its run could have finished with every retry.
    const staleAfterMs = spec.timeoutMs * spec.retry.attempts + 60_000;
    const decision = (await this.redis.werkpilotCircuitAdmit(
      restartsKey(this.keys, spec.name),
      circuitKey(this.keys, spec.name),
      this.clock(),
      this.windowMs,
      spec.maxRestartsPerHour,
      this.cooldownMs === undefined ? '' : this.cooldownMs,
      runId,
      staleAfterMs,
    )) as AdmitDecision;
    if (decision === 'trial') this.log?.info({ agent: spec.name, runId }, 'circuit half-open: trial run');
    return decision;
  }

  /** Closes the agent's circuit and clears its restart window (operator action; idempotent). */
  async reset(agent: string): Promise<CircuitState> {
    const now = this.clock();
    const previous = (await this.redis.werkpilotCircuitReset(
      restartsKey(this.keys, agent),
      circuitKey(this.keys, agent),
      this.keys.eventsStream,
      this.keys.eventsChannel,
      this.historyLength,
      agent,
      new Date(now).toISOString(),
    )) as CircuitState;
    this.log?.info({ agent, previous }, 'circuit reset');
    return previous;
  }

  /** Circuit states of the named agents in one round trip. Read-only. */
  async getMany(agents: readonly string[]): Promise<Map<string, CircuitStatus>> {
    const now = this.clock();
    const pipeline = this.redis.pipeline();
    for (const agent of agents) {
      pipeline.hmget(circuitKey(this.keys, agent), 'state', 'openedAt', 'trialRunId');
      pipeline.zcount(restartsKey(this.keys, agent), `(${now - this.windowMs}`, '+inf');
    }
    const replies = await execOrThrow(pipeline);
    const result = new Map<string, CircuitStatus>();
    agents.forEach((agent, i) => {
      const [state, openedAt, trialRunId] = replies[i * 2] as (string | null)[];
      result.set(agent, {
        state: (state as CircuitState | null) ?? 'closed',
        restartsLastHour: replies[i * 2 + 1] as number,
        openedAt: openedAt && state !== 'closed' ? new Date(Number(openedAt)).toISOString() : null,
        trialRunId: state === 'half-open' ? (trialRunId ?? null) : null,
      });
    });
    return result;
  }

  async get(agent: string): Promise<CircuitStatus> {
    return (await this.getMany([agent])).get(agent)!;
  }

  /** Restarts of each agent since its circuit was created (for the nightly report's deltas). */
  async restartTotals(agents: readonly string[]): Promise<Map<string, number>> {
    const pipeline = this.redis.pipeline();
    for (const agent of agents) pipeline.hget(circuitKey(this.keys, agent), 'restartsTotal');
    const replies = await execOrThrow(pipeline);
    return new Map(agents.map((agent, i) => [agent, Number(replies[i] ?? 0)]));
  }
}

function isSkippedByOwnCircuit(error: string | undefined): boolean {
  if (!error) return false;
  return error.split('; ').some((r) => r === CIRCUIT_OPEN_REASON || r === CIRCUIT_TRIAL_BUSY_REASON);
}

/**
 * Gate rule: the agent's own circuit. Open ⇒ `circuit open`; half-open ⇒ only the one trial run
 * passes, the others are skipped with `circuit half-open: a trial run is in progress`.
 */
export function ownCircuitRule(circuit: CircuitBreaker): GateRule {
  return async ({ spec, job }) => {
    const decision = await circuit.admit(spec, job.id!);
    if (decision === 'open') return CIRCUIT_OPEN_REASON;
    if (decision === 'busy') return CIRCUIT_TRIAL_BUSY_REASON;
    return null;
  };
}

/** A `SnapshotDeps.extend` entry: `agents.<name>.{circuit, restartsLastHour, circuitOpenedAt}`. */
export function circuitSnapshot(circuit: CircuitBreaker): (snapshot: MetricsSnapshot) => Promise<void> {
  return async (snapshot) => {
    const statuses = await circuit.getMany(Object.keys(snapshot.agents));
    for (const [agent, status] of statuses) {
      const entry = snapshot.agents[agent]!;
      entry.circuit = status.state;
      entry.restartsLastHour = status.restartsLastHour;
      entry.circuitOpenedAt = status.openedAt;
    }
  };
}
