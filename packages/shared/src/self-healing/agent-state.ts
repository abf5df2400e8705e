import type { ChainableCommander, Redis, Result } from 'ioredis';
import type { Keys } from '../redis/keys.js';
import { percentiles, type Percentiles } from '../observability/percentiles.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * How a run ended, as far as the agent's state is concerned. `cancelled`: an operator cancelled it
 * (API/CLI); it counts neither as a failure nor as a run of the agent's own doing.
 */
export type RunOutcome = 'success' | 'failure' | 'skipped' | 'cancelled';

export interface RunRecord {
  agent: string;
  /** The run (BullMQ job id) this record is about; lets listeners tell one run from another. */
  runId?: string;
  outcome: RunOutcome;
  /** Wall time of the attempt; not recorded for skipped or cancelled runs. */
  durationMs?: number;
  /** When the run ended (ms since epoch). */
  at: number;
  error?: string;
  /** Which attempt this was (1 = first); attempts above 1 count as retries in the metrics. */
  attempt?: number;
  /** The attempt failed because it exceeded the agent's `timeoutMs`. */
  timedOut?: boolean;
}

/** Per-agent state as read back from Redis. */
export interface AgentState extends Percentiles {
  runs: number;
  successes: number;
  failures: number;
  skipped: number;
  /** Runs an operator cancelled (not counted in `runs` or `failures`). */
  cancelled: number;
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

/** Sample lists are trimmed back to their size once they have grown this much past it (one LTRIM per this many runs). */
export const SAMPLE_TRIM_SLACK = 100;

/** Run-duration buckets (seconds) of the exported histogram: from 10 ms to 10 min, roughly ×2.5 apart. */
export const RUN_DURATION_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600] as const;

/** Index of the bucket (non-cumulative) a duration falls in; `length` is the +Inf overflow. */
export function durationBucketIndex(durationMs: number): number {
  const seconds = durationMs / 1000;
  const index = RUN_DURATION_BUCKETS_SECONDS.findIndex((upper) => seconds <= upper);
  return index === -1 ? RUN_DURATION_BUCKETS_SECONDS.length : index;
}

/**
 * Lua: `recordRun(stats, durations, outcomes, ...record)` records one run in the agent's stats hash
 * and duration samples; the keys come from KEYS (`outcomes` is only read, see below), the record is
 * the 8 values of recordArgs: outcome, duration ('' none), at, error, attempt, timedOut ('1'),
 * lastRun ('' none), duration bucket.
 *
 * The hash keeps the counters (runs, successes, failures, skipped, cancelled, consecutiveFailures),
 * the last-run fields, the exported figures Prometheus reads (duration buckets `b<i>`, `sumMs`,
 * `retries`, `timeout`) and `recent`, the last OUTCOME_WINDOW outcomes of executed runs (`s`/`f`,
 * newest first): for an executed run read once with HMGET and written back with one HSET — two
 * commands for any number of fields, in one script, so concurrent workers never lose an update.
 * Written as straight-line code: this runs inside Redis on every run, where Lua's own work (tables,
 * closures, string formatting) costs as much as the commands. Versions before kept the outcomes in
 * a list (`outcomes`): the first run after the upgrade carries its window over.
 * Durations are LPUSHed and trimmed only once SAMPLE_TRIM_SLACK past their size (readers take the
 * head). `lastRun` (`<runId>|<outcome>`) is what lone runs of the agent's dependents are judged by.
 */
export const RECORD_RUN_LUA = `
local function recordRun(stats, durations, outcomes, outcome, duration, at, err, attempt, timedOut, lastRun, bucketIndex)
  if outcome == 'skipped' or outcome == 'cancelled' then
    redis.call('HINCRBY', stats, outcome, 1)
    if outcome == 'skipped' then
      redis.call('HSET', stats, 'lastSkippedAt', at, 'lastSkipReason', err)
    elseif lastRun ~= '' then
      redis.call('HSET', stats, 'lastCancelledAt', at, 'lastRun', lastRun)
    else
      redis.call('HSET', stats, 'lastCancelledAt', at)
    end
    return
  end
  local isSuccess = outcome == 'success'
  local hasDuration = duration ~= ''
  local bucket = 'b' .. bucketIndex
  local cur = redis.call('HMGET', stats, 'runs', isSuccess and 'successes' or 'failures', 'consecutiveFailures', 'recent', bucket, 'sumMs', 'retries', 'timeout')
  local recent = cur[4]
  if not recent then recent = table.concat(redis.call('LRANGE', outcomes, 0, ${OUTCOME_WINDOW - 1})) end
  local h = { 'runs', (tonumber(cur[1]) or 0) + 1, 'lastRunAt', at, 'lastOutcome', outcome,
    'recent', (isSuccess and 's' or 'f') .. string.sub(recent, 1, ${OUTCOME_WINDOW - 1}) }
  if isSuccess then
    h[9], h[10], h[11], h[12], h[13], h[14] = 'successes', (tonumber(cur[2]) or 0) + 1, 'consecutiveFailures', 0, 'lastSuccessAt', at
  else
    h[9], h[10], h[11], h[12], h[13], h[14], h[15], h[16] = 'failures', (tonumber(cur[2]) or 0) + 1,
      'consecutiveFailures', (tonumber(cur[3]) or 0) + 1, 'lastError', err, 'lastErrorAt', at
    if timedOut == '1' then h[#h + 1] = 'timeout'; h[#h + 1] = (tonumber(cur[8]) or 0) + 1 end
  end
  if hasDuration then
    local n = #h
    h[n + 1], h[n + 2], h[n + 3], h[n + 4], h[n + 5], h[n + 6] = bucket, (tonumber(cur[5]) or 0) + 1, 'sumMs', (tonumber(cur[6]) or 0) + tonumber(duration), 'lastDurationMs', duration
  end
  if tonumber(attempt) > 1 then h[#h + 1] = 'retries'; h[#h + 1] = (tonumber(cur[7]) or 0) + 1 end
  if lastRun ~= '' then h[#h + 1] = 'lastRun'; h[#h + 1] = lastRun end
  redis.call('HSET', stats, unpack(h))
  if hasDuration and redis.call('LPUSH', durations, duration) > ${DURATION_SAMPLES + SAMPLE_TRIM_SLACK} then
    redis.call('LTRIM', durations, 0, ${DURATION_SAMPLES - 1})
  end
end
`;

/**
 * The last OUTCOME_WINDOW outcomes of executed runs (`s`/`f`, newest first): the stats hash's
 * `recent`, or — for an agent that has not run since versions that kept them in a list — that list.
 */
export function recentOutcomes(stats: Record<string, string> | string | null | undefined, legacyList: readonly string[]): string[] {
  const recent = typeof stats === 'string' || stats === null || stats === undefined ? stats : stats.recent;
  return recent ? recent.split('') : legacyList.slice(0, OUTCOME_WINDOW);
}

/** Records one run outcome on its own (tests, tools). KEYS: stats, durations, outcomes. ARGV: see recordArgs. */
const RECORD_ONE_LUA = `${RECORD_RUN_LUA}
recordRun(KEYS[1], KEYS[2], KEYS[3], unpack(ARGV))
return 1
`;

/** ARGV of RECORD_RUN_LUA's `r` (8 values), in the order the run path and RECORD_ONE_LUA pass them. */
export function recordArgs(record: RunRecord, lastRun: string): (string | number)[] {
  const duration = record.durationMs === undefined || record.outcome === 'skipped' || record.outcome === 'cancelled' ? '' : Math.max(0, Math.round(record.durationMs));
  return [record.outcome, duration, record.at, record.error ?? '', record.attempt ?? 1, record.timedOut ? '1' : '0', lastRun, duration === '' ? 0 : durationBucketIndex(duration)];
}

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
    defineScripts(redis, { 'werkpilotRecordRun-3': RECORD_ONE_LUA });
  }

  /**
   * Queues the record on a pipeline the caller executes. The run path records inside its completion
   * script (run-completion.ts); this is for tools and tests that seed state.
   */
  addRecordTo(pipeline: ChainableCommander, record: RunRecord): void {
    const k = this.keys;
    pipeline.werkpilotRecordRun(k.agentStats(record.agent), k.agentDurations(record.agent), k.agentOutcomes(record.agent), ...recordArgs(record, ''));
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
      pipeline.lrange(this.keys.agentDurations(agent), 0, DURATION_SAMPLES - 1);
      pipeline.lrange(this.keys.agentOutcomes(agent), 0, OUTCOME_WINDOW - 1);
    }
    const replies = await execOrThrow(pipeline);
    const states = new Map<string, AgentState>();
    agents.forEach((agent, i) => {
      const stats = replies[i * 3] as Record<string, string>;
      const durations = (replies[i * 3 + 1] as string[]).map(Number);
      const outcomes = recentOutcomes(stats, replies[i * 3 + 2] as string[]);
      states.set(agent, toState(stats, durations, outcomes));
    });
    return states;
  }

  async get(agent: string): Promise<AgentState> {
    return (await this.getMany([agent])).get(agent)!;
  }
}

function toState(stats: Record<string, string>, durations: number[], outcomes: string[]): AgentState {
  const successesInWindow = outcomes.filter((o) => o === 's').length;
  return stateFromStats(stats, {
    recentSuccessRate: outcomes.length === 0 ? null : successesInWindow / outcomes.length,
    recentRuns: outcomes.length,
    samples: durations.length,
    ...percentiles(durations),
  });
}

/** What the sample lists contribute to an agent's state (computed by whoever holds the samples). */
export type SampleFigures = Pick<AgentState, 'recentSuccessRate' | 'recentRuns' | 'samples' | 'p50' | 'p95' | 'p99'>;

/** An agent's state from its stats hash (as HGETALL returns it) and the figures of its samples. */
export function stateFromStats(stats: Record<string, string>, samples: SampleFigures): AgentState {
  const int = (field: string) => Number(stats[field] ?? 0);
  const iso = (field: string) => (stats[field] ? new Date(Number(stats[field])).toISOString() : null);
  return {
    runs: int('runs'),
    successes: int('successes'),
    failures: int('failures'),
    skipped: int('skipped'),
    cancelled: int('cancelled'),
    consecutiveFailures: int('consecutiveFailures'),
    lastRunAt: iso('lastRunAt'),
    lastOutcome: (stats.lastOutcome as RunOutcome | undefined) ?? null,
    lastDurationMs: stats.lastDurationMs ? Number(stats.lastDurationMs) : null,
    lastSuccessAt: iso('lastSuccessAt'),
    lastError: stats.lastError || null,
    lastErrorAt: iso('lastErrorAt'),
    recentSuccessRate: samples.recentSuccessRate,
    recentRuns: samples.recentRuns,
    samples: samples.samples,
    p50: samples.p50,
    p95: samples.p95,
    p99: samples.p99,
  };
}
