import type { Redis, Result } from 'ioredis';
import { DURATION_SAMPLES, OUTCOME_WINDOW, RUN_DURATION_BUCKETS_SECONDS, stateFromStats, type AgentState } from './agent-state.js';
import { RESTART_WINDOW_MS, type CircuitState } from './circuit-breaker.js';
import { circuitKey, type Keys, restartsKey, runMetricsKey } from '../redis/keys.js';
import { percentileOfSorted, percentilesOfSorted, type Percentiles } from '../observability/percentiles.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * One agent's figures as the cluster snapshot keeps them between builds, and the read that brings
 * them up to date: each read returns the agent's counters and its last 100 outcomes whole (they
 * are small) but only the durations recorded since the previous read, so an agent with 1000
 * samples costs a few values per build, not 1000.
 */

/**
 * Reads one agent's figures, atomically (no run can land between the counter and the samples it
 * counts). The durations recorded so far are the sum of the duration buckets `b<i>` of the stats
 * hash: the run path adds one to exactly one bucket with every duration it pushes, in the same
 * script (agent-state.ts). KEYS: stats hash, durations list, outcomes list (only for agents that
 * have not run since versions that kept outcomes there), legacy run-metrics hash, circuit hash,
 * restarts zset. ARGV: durations seen (-1: never read, so read the whole window), duration window,
 * outcome window, restarts after (ms, exclusive).
 * Returns { stats, isFull, durations (newest first, comma-joined), outcomes (newest first, one
 * letter each), legacy run-metrics, circuit { state, openedAt, trialRunId }, restart times (comma-joined) }.
 */
const READ_FIGURES_LUA = `
local stats = redis.call('HGETALL', KEYS[1])
local recorded, recent = 0, false
for i = 1, #stats, 2 do
  local field = stats[i]
  if field == 'recent' then
    recent = stats[i + 1]
  elseif string.byte(field, 1) == 98 and tonumber(string.sub(field, 2)) then
    recorded = recorded + tonumber(stats[i + 1])
  end
end
local seen = tonumber(ARGV[1])
local isFull = seen < 0 or recorded < seen
local n = tonumber(ARGV[2])
if not isFull then n = math.min(recorded - seen, n) end
local durations = ''
if n > 0 then durations = table.concat(redis.call('LRANGE', KEYS[2], 0, n - 1), ',') end
if not recent then recent = table.concat(redis.call('LRANGE', KEYS[3], 0, tonumber(ARGV[3]) - 1)) end
local restarts = {}
local zset = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. ARGV[4], '+inf', 'WITHSCORES')
for i = 2, #zset, 2 do restarts[#restarts + 1] = zset[i] end
return { stats, isFull and 1 or 0, durations, recent, redis.call('HGETALL', KEYS[4]),
  redis.call('HMGET', KEYS[5], 'state', 'openedAt', 'trialRunId'), table.concat(restarts, ',') }
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotReadAgentFigures(...args: (string | number)[]): Result<unknown[], Context>;
  }
}

/** An agent's most recent durations (ms), oldest overwritten first; at most DURATION_SAMPLES. */
export class DurationWindow {
  private values = new Uint32Array(0);
  /** Index of the newest value. */
  private head = -1;
  private count = 0;

  constructor(private readonly capacity = DURATION_SAMPLES) {}

  get size(): number {
    return this.count;
  }

  /** Replaces the window with `newestFirst`. */
  reset(newestFirst: readonly number[]): void {
    this.values = new Uint32Array(Math.min(this.capacity, Math.max(16, newestFirst.length)));
    this.head = -1;
    this.count = 0;
    this.add(newestFirst);
  }

  /** Adds values recorded since the last read (newest first, as Redis lists them). */
  add(newestFirst: readonly number[]): void {
    for (let i = Math.min(newestFirst.length, this.capacity) - 1; i >= 0; i -= 1) this.push(newestFirst[i]!);
  }

  /** The `n` most recent values, ascending. */
  sortedNewest(n = this.count): Uint32Array {
    const take = Math.min(n, this.count);
    const out = new Uint32Array(take);
    for (let i = 0; i < take; i += 1) out[i] = this.values[(this.head - i + this.values.length) % this.values.length]!;
    return out.sort();
  }

  private push(value: number): void {
    if (this.count === this.values.length && this.values.length < this.capacity) this.grow();
    this.head = (this.head + 1) % this.values.length;
    this.values[this.head] = Math.max(0, Math.min(0xffffffff, Math.round(value)));
    this.count = Math.min(this.count + 1, this.values.length);
  }

  private grow(): void {
    const next = new Uint32Array(Math.min(this.capacity, Math.max(16, this.values.length * 2)));
    // Oldest first into the new array, so head = count - 1.
    for (let i = 0; i < this.count; i += 1) next[i] = this.values[(this.head - this.count + 1 + i + this.values.length) % this.values.length]!;
    this.values = next;
    this.head = this.count - 1;
  }
}

/** The per-agent figures the snapshot keeps between builds. */
export interface AgentFigures {
  stats: Record<string, string>;
  /**
   * The frozen run-metrics hash of versions before the one-script run path (prometheus-metrics.ts
   * runMetricsKey): its counts add to the stats hash's, so exported counters carry on across the upgrade.
   */
  legacyRunMetrics: Record<string, string>;
  durations: DurationWindow;
  /** The last OUTCOME_WINDOW outcomes, newest first: `s` success, `f` failure. */
  outcomes: string;
  circuit: { state: CircuitState; openedAt: number | null; trialRunId: string | null };
  /** When the restarts still in the rolling window happened (ms), any order. */
  restarts: number[];
  /** Durations recorded at the last read (sum of the stats hash's buckets), where the next read's new samples start. */
  seenDurations: number;
  /** Percentiles over all durations, and p95 over the newest OUTCOME_WINDOW (for the score). */
  percentiles: Percentiles;
  recentP95: number | null;
}

export interface AgentFiguresReaderOptions {
  redis: Redis;
  keys: Keys;
  /** The circuit breaker's rolling window (one hour). */
  restartWindowMs?: number;
}

/** Reads and keeps every agent's figures; `refresh(agents)` brings the named ones up to date. */
export class AgentFiguresReader {
  private readonly redis: Redis;
  private readonly keys: Keys;
  readonly restartWindowMs: number;
  private readonly figures = new Map<string, AgentFigures>();

  constructor({ redis, keys, restartWindowMs = RESTART_WINDOW_MS }: AgentFiguresReaderOptions) {
    this.redis = redis;
    this.keys = keys;
    this.restartWindowMs = restartWindowMs;
    defineScripts(redis, { 'werkpilotReadAgentFigures-6': READ_FIGURES_LUA });
  }

  get(agent: string): AgentFigures | undefined {
    return this.figures.get(agent);
  }

  /** Whether the agent was read at least once (an unread agent's first read returns whole windows). */
  has(agent: string): boolean {
    return this.figures.has(agent);
  }

  /** Re-reads the named agents in one pipelined round trip (the caller bounds how many). */
  async refresh(agents: readonly string[], now: number): Promise<void> {
    if (agents.length === 0) return;
    const pipeline = this.redis.pipeline();
    const k = this.keys;
    for (const agent of agents) {
      const known = this.figures.get(agent);
      pipeline.werkpilotReadAgentFigures(
        k.agentStats(agent),
        k.agentDurations(agent),
        k.agentOutcomes(agent),
        runMetricsKey(k, agent),
        circuitKey(k, agent),
        restartsKey(k, agent),
        known?.seenDurations ?? -1,
        DURATION_SAMPLES,
        OUTCOME_WINDOW,
        now - this.restartWindowMs,
      );
    }
    const replies = await execOrThrow(pipeline);
    for (const [i, agent] of agents.entries()) this.apply(agent, replies[i] as unknown[]);
  }

  /** Restarts of `agent` in the rolling window as of `now`. */
  restartsAt(figures: AgentFigures, now: number): number {
    const after = now - this.restartWindowMs;
    let count = 0;
    for (const at of figures.restarts) if (at > after) count += 1;
    return count;
  }

  private apply(agent: string, reply: unknown[]): void {
    const [statsFlat, isFull, durations, outcomes, legacyFlat, circuit, restarts] = reply as [string[], number, string, string, string[], (string | null)[], string];
    const stats = pairs(statsFlat);
    const newDurations = numbers(durations);
    let figures = this.figures.get(agent);
    if (!figures || isFull === 1) {
      const window = figures?.durations ?? new DurationWindow();
      window.reset(newDurations);
      figures = {
        stats,
        legacyRunMetrics: {},
        durations: window,
        outcomes: '',
        circuit: { state: 'closed', openedAt: null, trialRunId: null },
        restarts: [],
        seenDurations: 0,
        percentiles: { p50: null, p95: null, p99: null },
        recentP95: null,
      };
      this.figures.set(agent, figures);
      this.computePercentiles(figures);
    } else if (newDurations.length > 0) {
      figures.durations.add(newDurations);
      this.computePercentiles(figures);
    }
    figures.stats = stats;
    figures.outcomes = outcomes.slice(0, OUTCOME_WINDOW);
    figures.seenDurations = durationsRecorded(stats);
    figures.legacyRunMetrics = pairs(legacyFlat);
    const [state, openedAt, trialRunId] = circuit;
    figures.circuit = {
      state: (state as CircuitState | null) ?? 'closed',
      openedAt: openedAt && state !== 'closed' ? Number(openedAt) : null,
      trialRunId: state === 'half-open' ? (trialRunId ?? null) : null,
    };
    figures.restarts = numbers(restarts);
  }

  private computePercentiles(figures: AgentFigures): void {
    figures.percentiles = percentilesOfSorted(figures.durations.sortedNewest());
    figures.recentP95 = percentileOfSorted(figures.durations.sortedNewest(OUTCOME_WINDOW), 95);
  }
}

/** The AgentState (`/api/metrics` agent fields) of kept figures. */
export function agentStateOf(figures: AgentFigures): AgentState {
  const outcomes = figures.outcomes;
  let successes = 0;
  for (let i = 0; i < outcomes.length; i += 1) if (outcomes.charCodeAt(i) === 115 /* s */) successes += 1;
  return stateFromStats(figures.stats, {
    recentSuccessRate: outcomes.length === 0 ? null : successes / outcomes.length,
    recentRuns: outcomes.length,
    samples: figures.durations.size,
    ...figures.percentiles,
  });
}

/** Durations the run path has recorded for an agent: one per count in its duration buckets. */
function durationsRecorded(stats: Record<string, string>): number {
  let total = 0;
  for (let i = 0; i <= RUN_DURATION_BUCKETS_SECONDS.length; i += 1) total += Number(stats[`b${i}`] ?? 0);
  return total;
}

function pairs(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

function numbers(joined: string): number[] {
  return joined === '' ? [] : joined.split(',').map(Number);
}
