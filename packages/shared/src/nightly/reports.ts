import type { Redis, Result } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import type { AgentState } from '../self-healing/agent-state.js';
import { type Keys, reportsIndexKey, reportsKey } from '../redis/keys.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * The nightly optimisation's daily reports: what each agent did since the previous report, and
 * tuning advice. Kept `REPORT_RETENTION_MS` (30 days) in Redis; one per day (id = the date in the
 * nightly time zone).
 */

export const REPORT_RETENTION_MS = 30 * 24 * 60 * 60 * 1000;
/** Below this score an agent is flagged. */
export const FLAG_SCORE_BELOW = 50;

/** Cumulative counters a report keeps, so the next one can report the difference. */
export interface AgentTotals {
  runs: number;
  failures: number;
  skipped: number;
  restarts: number;
  /** Skips caused by each dependency. */
  skipCauses: Record<string, number>;
}

export interface AgentReport {
  agent: string;
  score: number | null;
  /** Executed runs since the previous report (all of them for the first report). */
  runs: number;
  failures: number;
  /** failures / runs over the same period; null without runs. */
  failureRate: number | null;
  skipped: number;
  /** Restarts (failed attempts) over the same period, and in the last hour. */
  restarts: number;
  restartsLastHour: number;
  /** Over the last 1000 run durations (ms). */
  p50: number | null;
  p95: number | null;
  p99: number | null;
  timeoutMs: number;
  /** Score under 50. */
  flagged: boolean;
  /** 2 × p99 when the timeout is at or below p99 (runs are hitting it). */
  suggestedTimeoutMs: number | null;
  /** The dependency that caused most of this period's skips. */
  topSkipCause: { dependency: string; skips: number } | null;
  advice: string[];
  totals: AgentTotals;
}

export interface NightlyReport {
  /** The report's day, YYYY-MM-DD in `timezone`. */
  id: string;
  generatedAt: string;
  timezone: string;
  /** When the previous report was generated (the start of the period), null for the first. */
  since: string | null;
  agents: Record<string, AgentReport>;
  /** Agents with a score under 50. */
  flagged: string[];
  /** What the nightly clean-up removed. */
  trimmed: { completedJobs: number };
}

export interface AgentReportInputs {
  spec: Pick<AgentSpec, 'name' | 'timeoutMs'>;
  state: Pick<AgentState, 'p50' | 'p95' | 'p99'>;
  score: number | null;
  restartsLastHour: number;
  totals: AgentTotals;
  /** The previous report's totals for this agent; undefined for the first report. */
  previous: AgentTotals | undefined;
}

/** Builds one agent's section: the period's figures and the advice. Pure. */
export function buildAgentReport({ spec, state, score, restartsLastHour, totals, previous }: AgentReportInputs): AgentReport {
  // Counters only grow; a reset Redis makes them smaller, and then the whole total is this period's.
  const since = (now: number, before: number | undefined) => (before !== undefined && now >= before ? now - before : now);
  const runs = since(totals.runs, previous?.runs);
  const failures = since(totals.failures, previous?.failures);
  const skipCauses = Object.entries(totals.skipCauses)
    .map(([dependency, count]) => ({ dependency, skips: since(count, previous?.skipCauses[dependency]) }))
    .filter((c) => c.skips > 0)
    .sort((a, b) => b.skips - a.skips || a.dependency.localeCompare(b.dependency));

  const advice: string[] = [];
  const flagged = score !== null && score < FLAG_SCORE_BELOW;
  if (flagged) advice.push(`score ${score} is under ${FLAG_SCORE_BELOW}: flagged for attention`);
  const suggestedTimeoutMs = state.p99 !== null && spec.timeoutMs <= state.p99 ? 2 * state.p99 : null;
  if (suggestedTimeoutMs !== null) {
    advice.push(`timeoutMs ${spec.timeoutMs} is not above p99 ${state.p99} ms: raise it to ${suggestedTimeoutMs} (2 × p99)`);
  }
  const topSkipCause = skipCauses[0] ?? null;
  if (topSkipCause) advice.push(`dependency ${topSkipCause.dependency} caused most skips (${topSkipCause.skips})`);

  return {
    agent: spec.name,
    score,
    runs,
    failures,
    failureRate: runs > 0 ? failures / runs : null,
    skipped: since(totals.skipped, previous?.skipped),
    restarts: since(totals.restarts, previous?.restarts),
    restartsLastHour,
    p50: state.p50,
    p95: state.p95,
    p99: state.p99,
    timeoutMs: spec.timeoutMs,
    flagged,
    suggestedTimeoutMs,
    topSkipCause,
    advice,
    totals,
  };
}

/** The day a report belongs to: YYYY-MM-DD of `at` in `timezone`. */
export function reportDay(at: number, timezone: string): string {
  return new Intl.DateTimeFormat('en-CA', { timeZone: timezone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(at));
}

/**
 * Saves a report and drops those past retention.
 * Invariants: a day has at most one report — with `onlyIfAbsent`, a second save of the same day is
 * refused (however many nightly jobs raced), otherwise it replaces it; the hash and the index hold
 * the same ids.
 * KEYS: reports hash, index zset. ARGV: id, json, generatedAtMs, cutoffMs, onlyIfAbsent ('1'/'0').
 * Returns 1 when saved, 0 when refused.
 */
const SAVE_REPORT_LUA = `
local reports, index = KEYS[1], KEYS[2]
if ARGV[5] == '1' and redis.call('HEXISTS', reports, ARGV[1]) == 1 then return 0 end
redis.call('HSET', reports, ARGV[1], ARGV[2])
redis.call('ZADD', index, ARGV[3], ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ARGV[4])
for _, id in ipairs(expired) do
  redis.call('HDEL', reports, id)
  redis.call('ZREM', index, id)
end
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotSaveReport(reports: string, index: string, ...args: (string | number)[]): Result<number, Context>;
  }
}

/** Stores and reads the nightly reports. */
export class ReportStore {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly retentionMs: number;

  constructor({ redis, keys, retentionMs = REPORT_RETENTION_MS }: { redis: Redis; keys: Keys; retentionMs?: number }) {
    this.redis = redis;
    this.keys = keys;
    this.retentionMs = retentionMs;
    defineScripts(redis, { 'werkpilotSaveReport-2': SAVE_REPORT_LUA });
  }

  /** Saves `report`; with `onlyIfAbsent`, returns false when its day already has one. */
  async save(report: NightlyReport, { onlyIfAbsent }: { onlyIfAbsent: boolean }): Promise<boolean> {
    const at = Date.parse(report.generatedAt);
    const saved = await this.redis.werkpilotSaveReport(
      reportsKey(this.keys),
      reportsIndexKey(this.keys),
      report.id,
      JSON.stringify(report),
      at,
      at - this.retentionMs,
      onlyIfAbsent ? '1' : '0',
    );
    return saved === 1;
  }

  async get(id: string): Promise<NightlyReport | null> {
    const json = await this.redis.hget(reportsKey(this.keys), id);
    return json ? (JSON.parse(json) as NightlyReport) : null;
  }

  /** The most recent report, or null before the first night. */
  async getLatest(): Promise<NightlyReport | null> {
    const [id] = await this.redis.zrevrange(reportsIndexKey(this.keys), 0, 0);
    return id ? this.get(id) : null;
  }

  /** The kept reports (30 days), newest first. */
  async list(): Promise<NightlyReport[]> {
    const ids = await this.redis.zrevrange(reportsIndexKey(this.keys), 0, -1);
    if (ids.length === 0) return [];
    const jsons = await this.redis.hmget(reportsKey(this.keys), ...ids);
    return jsons.filter((j): j is string => j !== null).map((j) => JSON.parse(j) as NightlyReport);
  }
}
