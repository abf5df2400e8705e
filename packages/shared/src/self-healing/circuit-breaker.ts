import { randomBytes } from 'node:crypto';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import type { RunRecord } from './agent-state.js';
import { BUS_EMIT_LUA, BUS_HISTORY_LENGTH } from '../messaging/bus.js';
import { circuitKey, type Keys, restartsKey } from '../redis/keys.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import { markAgentsChanged } from '../observability/snapshot-changes.js';
import { defineScripts } from '../redis/redis-scripts.js';

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

/**
 * Lua shared by every script that moves a circuit (the breaker's own, run admission, run completion,
 * cancel), so the rules live in one place. `c` is `{ circuit = <hash>, restarts = <zset>, epoch =
 * <gate epoch> }` (all from KEYS). Needs BUS_EMIT_LUA. Every change of state bumps the gate epoch,
 * so workers' cached gate state (gate-cache.ts) notices it on their next run.
 *
 * `circuitDecision` only reads: 'closed', 'trial' (this run holds the trial), 'claim' (this run may
 * take the trial), 'open' or 'busy' (skip it). Invariant: at most one run holds the half-open
 * trial, cluster-wide — deciding and `claimTrial` happen in the same script. A trial whose holder
 * vanished (no outcome within `staleAfter`) can be claimed by the next run.
 *
 * `circuitRecord` applies one outcome. Invariants: a restart is counted and the open/close decision
 * taken on the same count (no other worker's restart slips between); a circuit opens once per
 * crossing (one `circuit:opened`); only the trial run's outcome moves a half-open circuit; a trial
 * that ends without running (skipped, cancelled) is handed back. Returns the restarts in the window.
 */
export const CIRCUIT_LUA = `
local function circuitDecision(c, runId, now, window, max, cooldown, staleAfter)
  local state = redis.call('HGET', c.circuit, 'state')
  if not state or state == 'closed' then return 'closed' end
  if state == 'half-open' then
    local trial = redis.call('HMGET', c.circuit, 'trialRunId', 'trialStartedAt')
    if trial[1] == runId then return 'trial' end
    if now - tonumber(trial[2] or '0') < staleAfter then return 'busy' end
    return 'claim'
  end
  local cooled
  if cooldown == '' then
    cooled = redis.call('ZCOUNT', c.restarts, string.format('(%d', now - window), '+inf') <= max
  else
    cooled = now - tonumber(redis.call('HGET', c.circuit, 'openedAt') or '0') >= tonumber(cooldown)
  end
  if cooled then return 'claim' end
  return 'open'
end
local function claimTrial(c, runId, now)
  redis.call('HSET', c.circuit, 'state', 'half-open', 'trialRunId', runId, 'trialStartedAt', now)
  redis.call('INCR', c.epoch)
end
local function circuitRecord(c, ev, outcome, runId, now, window, max, member, agent, at)
  local state = redis.call('HGET', c.circuit, 'state') or 'closed'
  local isTrial = state == 'half-open' and runId ~= '' and redis.call('HGET', c.circuit, 'trialRunId') == runId
  local count = 0
  if outcome == 'failure' then
    redis.call('ZREMRANGEBYSCORE', c.restarts, '-inf', now - window)
    redis.call('ZADD', c.restarts, now, member)
    redis.call('PEXPIRE', c.restarts, window)
    redis.call('HINCRBY', c.circuit, 'restartsTotal', 1)
    count = redis.call('ZCARD', c.restarts)
    if isTrial then
      redis.call('HSET', c.circuit, 'state', 'open', 'openedAt', now, 'openCount', count)
      redis.call('HDEL', c.circuit, 'trialRunId', 'trialStartedAt')
      redis.call('INCR', c.epoch)
      emit(ev.stream, ev.channel, ev.maxlen, 'circuit:opened', agent, at, { count = count, maxRestartsPerHour = max, reason = 'trial run failed', runId = runId })
    elseif state == 'closed' and count > max then
      redis.call('HSET', c.circuit, 'state', 'open', 'openedAt', now, 'openCount', count)
      redis.call('INCR', c.epoch)
      emit(ev.stream, ev.channel, ev.maxlen, 'circuit:opened', agent, at, { count = count, maxRestartsPerHour = max })
    end
  elseif outcome == 'success' and isTrial then
    count = redis.call('ZCOUNT', c.restarts, string.format('(%d', now - window), '+inf')
    redis.call('HSET', c.circuit, 'state', 'closed')
    redis.call('HDEL', c.circuit, 'openedAt', 'openCount', 'trialRunId', 'trialStartedAt')
    redis.call('INCR', c.epoch)
    emit(ev.stream, ev.channel, ev.maxlen, 'circuit:closed', agent, at, { reason = 'trial run succeeded', runId = runId, restartsLastHour = count })
  elseif isTrial and outcome ~= 'success' then
    redis.call('HSET', c.circuit, 'state', 'open')
    redis.call('HDEL', c.circuit, 'trialRunId', 'trialStartedAt')
    redis.call('INCR', c.epoch)
  end
  return count
end
`;

/**
 * KEYS: restarts zset, circuit hash, events stream, gate epoch.
 * ARGV: outcome, now, windowMs, max, member, runId, channel, maxlen, agent, atIso.
 */
const RECORD_OUTCOME_LUA = `${BUS_EMIT_LUA}${CIRCUIT_LUA}
local c = { restarts = KEYS[1], circuit = KEYS[2], epoch = KEYS[4] }
local ev = { stream = KEYS[3], channel = ARGV[7], maxlen = ARGV[8] }
local count = circuitRecord(c, ev, ARGV[1], ARGV[6], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[9], ARGV[10])
if ARGV[1] ~= 'failure' then count = redis.call('ZCOUNT', c.restarts, string.format('(%d', tonumber(ARGV[2]) - tonumber(ARGV[3])), '+inf') end
return count
`;

/**
 * KEYS: restarts zset, circuit hash, gate epoch. ARGV: now, windowMs, max, cooldownMs ('' = window rule), runId, staleAfterMs.
 * Returns 'closed' | 'trial' | 'open' | 'busy'.
 */
const ADMIT_LUA = `${CIRCUIT_LUA}
local c = { restarts = KEYS[1], circuit = KEYS[2], epoch = KEYS[3] }
local now = tonumber(ARGV[1])
local decision = circuitDecision(c, ARGV[5], now, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6]))
if decision == 'claim' then
  claimTrial(c, ARGV[5], now)
  return 'trial'
end
return decision
`;

/**
 * Closes the circuit and forgets the window's restarts (operator reset).
 * KEYS: restarts zset, circuit hash, events stream, gate epoch. ARGV: channel, maxlen, agent, atIso.
 * Returns the state it was in.
 */
const RESET_LUA = `${BUS_EMIT_LUA}
local restarts, circuit, stream = KEYS[1], KEYS[2], KEYS[3]
local previous = redis.call('HGET', circuit, 'state') or 'closed'
redis.call('DEL', restarts)
redis.call('HSET', circuit, 'state', 'closed')
redis.call('HDEL', circuit, 'openedAt', 'openCount', 'trialRunId', 'trialStartedAt')
if previous ~= 'closed' then
  redis.call('INCR', KEYS[4])
  emit(stream, ARGV[1], ARGV[2], 'circuit:closed', ARGV[3], ARGV[4], { reason = 'manual reset', previous = previous })
end
return previous
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotCircuitRecord(restarts: string, circuit: string, stream: string, epoch: string, ...args: (string | number)[]): Result<number, Context>;
    werkpilotCircuitAdmit(restarts: string, circuit: string, epoch: string, ...args: (string | number)[]): Result<string, Context>;
    werkpilotCircuitReset(restarts: string, circuit: string, stream: string, epoch: string, ...args: (string | number)[]): Result<string, Context>;
  }
}

export type AdmitDecision = 'closed' | 'trial' | 'open' | 'busy';

/** A breaker's rules, for the scripts of the run path that apply them (see CIRCUIT_LUA). */
export interface CircuitSettings {
  windowMs: number;
  /** Unset: the window rule (open until the window holds no more than the limit). */
  cooldownMs: number | undefined;
  clock: () => number;
  historyLength: number;
}

/** A trial holder that died is noticed after its run could have finished with every retry. */
export function trialStaleAfterMs(spec: Pick<AgentSpec, 'timeoutMs' | 'retry'>): number {
  return spec.timeoutMs * spec.retry.attempts + 60_000;
}

/** A unique member of the restarts zset for a restart at `now`. */
export function restartMember(now: number): string {
  return `${now}:${randomBytes(6).toString('hex')}`;
}

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
    this.historyLength = options.historyLength ?? BUS_HISTORY_LENGTH;
    defineScripts(this.redis, { 'werkpilotCircuitRecord-4': RECORD_OUTCOME_LUA, 'werkpilotCircuitAdmit-3': ADMIT_LUA, 'werkpilotCircuitReset-4': RESET_LUA });
  }

  /** What the run path's scripts need to apply this breaker's rules themselves (run-admission.ts, run-completion.ts). */
  get settings(): CircuitSettings {
    return { windowMs: this.windowMs, cooldownMs: this.cooldownMs, clock: this.clock, historyLength: this.historyLength };
  }

  /** Records one outcome on its own round trip; returns the restarts in the window. */
  async record(record: Pick<RunRecord, 'agent' | 'outcome'> & Partial<RunRecord>, maxRestartsPerHour: number): Promise<number> {
    const now = this.clock();
    return this.redis.werkpilotCircuitRecord(
      restartsKey(this.keys, record.agent),
      circuitKey(this.keys, record.agent),
      this.keys.eventsStream,
      this.keys.gateEpoch,
      record.outcome,
      now,
      this.windowMs,
      maxRestartsPerHour,
      restartMember(now),
      record.runId ?? '',
      this.keys.eventsChannel,
      this.historyLength,
      record.agent,
      new Date(now).toISOString(),
    );
  }

  /**
   * Asks whether run `runId` of `spec` may start: `closed` (normal), `trial` (this run is the
   * half-open trial), `open` or `busy` (skip it). Mutates: may move open → half-open.
   */
  async admit(spec: Pick<AgentSpec, 'name' | 'maxRestartsPerHour' | 'timeoutMs' | 'retry'>, runId: string): Promise<AdmitDecision> {
    const decision = (await this.redis.werkpilotCircuitAdmit(
      restartsKey(this.keys, spec.name),
      circuitKey(this.keys, spec.name),
      this.keys.gateEpoch,
      this.clock(),
      this.windowMs,
      spec.maxRestartsPerHour,
      this.cooldownMs === undefined ? '' : this.cooldownMs,
      runId,
      trialStaleAfterMs(spec),
    )) as AdmitDecision;
    if (decision === 'trial') {
      this.log?.info({ agent: spec.name, runId }, 'circuit half-open: trial run');
      // open → half-open happens here, at the gate, not in a run's outcome: tell the snapshot.
      await markAgentsChanged({ redis: this.redis, keys: this.keys }, [spec.name]);
    }
    return decision;
  }

  /** Closes the agent's circuit and clears its restart window (operator action; idempotent). */
  async reset(agent: string): Promise<CircuitState> {
    const now = this.clock();
    const previous = (await this.redis.werkpilotCircuitReset(
      restartsKey(this.keys, agent),
      circuitKey(this.keys, agent),
      this.keys.eventsStream,
      this.keys.gateEpoch,
      this.keys.eventsChannel,
      this.historyLength,
      agent,
      new Date(now).toISOString(),
    )) as CircuitState;
    await markAgentsChanged({ redis: this.redis, keys: this.keys }, [agent]);
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
