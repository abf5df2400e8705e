import type { ChainableCommander, Redis, Result } from 'ioredis';
import type { Keys } from './keys.js';
import { percentiles, type Percentiles } from './percentiles.js';
import { execOrThrow } from './redis-pipeline.js';

/** How a run ended, as far as the agent's state is concerned. */
export type RunOutcome = 'success' | 'failure' | 'skipped';

export interface RunRecord {
  agent: string;
  /** The run (BullMQ job id) this record is about; lets listeners tell one run from another. */
  runId?: string;
  outcome: RunOutcome;
  /** Wall time of the attempt; not recorded for skipped runs. */
  durationMs?: number;
  /** When the run ended (ms since epoch). */
  at: number;
  error?: string;
  /** Which attempt this was (1 = first); attempts above 1 count as retries in the metrics. */
  attempt?: number;
  /** The attempt failed because it exceeded the agent's `timeoutMs`. */
  timedOut?: boolean;
  /** The attempt failed because an operator cancelled the run (no retry follows). */
  cancelled?: boolean;
}

/** Per-agent state as read back from Redis. */
export interface AgentState extends Percentiles {
  runs: number;
  successes: number;
  failures: number;
  skipped: number;
  consecutiveFailures: number;
  lastRunAt: string | null;
  lastOutcome: RunOutcome | null;
  lastDurationMs: number | null;
  lastSuccessAt: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
  /** Success rate over the last `OUTCOME_WINDOW` executed runs; null before the first. */
  recentSuccessRate: number | null;
  /** How many executed runs `recentSuccessRate` is over. */
  recentRuns: number;
  /** How many durations the percentiles are over. */
  samples: number;
}

export const DURATION_SAMPLES = 1000;
export const OUTCOME_WINDOW = 100;

/**
 * Records one run's outcome. Counters, last-run fields and the sample lists change in one script,
 * so concurrent workers never lose an update (no read-modify-write in the client).
 * KEYS: stats hash, durations list, outcomes list.
 * ARGV: outcome, durationMs ('' for none), atMs, error, maxDurations, maxOutcomes.
 */
const RECORD_RUN_LUA = `
local stats, durations, outcomes = KEYS[1], KEYS[2], KEYS[3]
local outcome, duration, at, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if outcome == 'skipped' then
  redis.call('HINCRBY', stats, 'skipped', 1)
  redis.call('HSET', stats, 'lastSkippedAt', at, 'lastSkipReason', err)
  return 0
end
redis.call('HINCRBY', stats, 'runs', 1)
redis.call('HSET', stats, 'lastRunAt', at, 'lastOutcome', outcome)
if duration ~= '' then
  redis.call('HSET', stats, 'lastDurationMs', duration)
  redis.call('LPUSH', durations, duration)
  redis.call('LTRIM', durations, 0, tonumber(ARGV[5]) - 1)
end
if outcome == 'success' then
  redis.call('HINCRBY', stats, 'successes', 1)
  redis.call('HSET', stats, 'consecutiveFailures', 0, 'lastSuccessAt', at)
  redis.call('LPUSH', outcomes, 's')
else
  redis.call('HINCRBY', stats, 'failures', 1)
  redis.call('HINCRBY', stats, 'consecutiveFailures', 1)
  redis.call('HSET', stats, 'lastError', err, 'lastErrorAt', at)
  redis.call('LPUSH', outcomes, 'f')
end
redis.call('LTRIM', outcomes, 0, tonumber(ARGV[6]) - 1)
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotRecordRun(stats: string, durations: string, outcomes: string, ...args: (string | number)[]): Result<number, Context>;
  }
}

/**
 * Agent counters, last-run fields and duration samples in Redis, shared by every process.
 * Percentiles are exact, computed on read over the last 1000 durations.
 */
export class AgentStateStore {
  private readonly redis: Redis;
  private readonly keys: Keys;

  constructor({ redis, keys }: { redis: Redis; keys: Keys }) {
    this.redis = redis;
    this.keys = keys;
    if (typeof (redis as Partial<Redis>).werkpilotRecordRun !== 'function') {
      redis.defineCommand('werkpilotRecordRun', { numberOfKeys: 3, lua: RECORD_RUN_LUA });
    }
  }

  /** Queues the record on a pipeline the caller executes (to share a round trip with events). */
  addRecordTo(pipeline: ChainableCommander, record: RunRecord): void {
    const k = this.keys;
    pipeline.werkpilotRecordRun(
      k.agentStats(record.agent),
      k.agentDurations(record.agent),
      k.agentOutcomes(record.agent),
      record.outcome,
      record.durationMs === undefined ? '' : Math.round(record.durationMs),
      record.at,
      record.error ?? '',
      DURATION_SAMPLES,
      OUTCOME_WINDOW,
    );
  }

  async record(record: RunRecord): Promise<void> {
    const pipeline = this.redis.pipeline();
    this.addRecordTo(pipeline, record);
    await execOrThrow(pipeline);
  }

  /** States of the named agents, read in one pipelined round trip. */
  async getMany(agents: readonly string[]): Promise<Map<string, AgentState>> {
    const pipeline = this.redis.pipeline();
    for (const agent of agents) {
      pipeline.hgetall(this.keys.agentStats(agent));
      pipeline.lrange(this.keys.agentDurations(agent), 0, -1);
      pipeline.lrange(this.keys.agentOutcomes(agent), 0, -1);
    }
    const replies = await execOrThrow(pipeline);
    const states = new Map<string, AgentState>();
    agents.forEach((agent, i) => {
      const stats = replies[i * 3] as Record<string, string>;
      const durations = (replies[i * 3 + 1] as string[]).map(Number);
      const outcomes = replies[i * 3 + 2] as string[];
      states.set(agent, toState(stats, durations, outcomes));
    });
    return states;
  }

  async get(agent: string): Promise<AgentState> {
    return (await this.getMany([agent])).get(agent)!;
  }
}

function toState(stats: Record<string, string>, durations: number[], outcomes: string[]): AgentState {
  const int = (field: string) => Number(stats[field] ?? 0);
  const iso = (field: string) => (stats[field] ? new Date(Number(stats[field])).toISOString() : null);
  const successesInWindow = outcomes.filter((o) => o === 's').length;
  return {
    runs: int('runs'),
    successes: int('successes'),
    failures: int('failures'),
    skipped: int('skipped'),
    consecutiveFailures: int('consecutiveFailures'),
    lastRunAt: iso('lastRunAt'),
    lastOutcome: (stats.lastOutcome as RunOutcome | undefined) ?? null,
    lastDurationMs: stats.lastDurationMs ? Number(stats.lastDurationMs) : null,
    lastSuccessAt: iso('lastSuccessAt'),
    lastError: stats.lastError || null,
    lastErrorAt: iso('lastErrorAt'),
    recentSuccessRate: outcomes.length === 0 ? null : successesInWindow / outcomes.length,
    recentRuns: outcomes.length,
    samples: durations.length,
    ...percentiles(durations),
  };
}
