import type { Redis } from 'ioredis';
import { RUN_DURATION_BUCKETS_SECONDS, durationBucketIndex, type RunRecord } from '../self-healing/agent-state.js';
import { rollupKey, rollupSweptKey, type Keys } from '../redis/keys.js';
import { execOrThrow } from '../redis/redis-pipeline.js';

/**
 * Per-minute rollups of an agent's run attempts, for the agent page's charts (last hour per minute,
 * last 24 h and 7 days per hour): counts by outcome and, for executed attempts, a histogram over the
 * exported run-duration buckets (RUN_DURATION_BUCKETS_SECONDS), from which p50/p95/p99 are estimated.
 *
 * Written by the completion script (run-completion.ts) with exactly one command per attempt: one
 * HINCRBY of field `<minute of hour>:<outcome letter><bucket>` in the agent's hash for that UTC hour.
 * No EXPIRE rides along (it would be a second command per run); the hour keys are deleted by the
 * nightly optimisation once older than ROLLUP_RETENTION_HOURS (sweepRollups), and readers never look
 * further back. Every attempt counts: a failed attempt that will be retried is a failure here.
 */
export const ROLLUP_RETENTION_HOURS = 7 * 24;
/** How far back the nightly sweep deletes hour keys: a month of missed nights is caught up. */
export const ROLLUP_SWEEP_HOURS = 30 * 24;

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;
const OUTCOME_LETTER = { success: 's', failure: 'f', skipped: 'k', cancelled: 'c' } as const;
const LETTER_OUTCOME = { s: 'success', f: 'failure', k: 'skipped', c: 'cancelled' } as const;

/** The key and field a run record increments. */
export function rollupTarget(keys: Keys, record: RunRecord): { key: string; field: string } {
  const hour = Math.floor(record.at / HOUR_MS);
  const minute = Math.floor((record.at % HOUR_MS) / MINUTE_MS);
  const hasDuration = record.durationMs !== undefined && (record.outcome === 'success' || record.outcome === 'failure');
  const bucket = hasDuration ? String(durationBucketIndex(Math.max(0, record.durationMs!))) : '';
  return { key: rollupKey(keys, record.agent, hour), field: `${minute}:${OUTCOME_LETTER[record.outcome]}${bucket}` };
}

/** One point of a chart: the attempts that ended in [at, at + step). */
export interface RollupPoint {
  /** Start of the interval (ISO-8601). */
  at: string;
  success: number;
  failure: number;
  skipped: number;
  cancelled: number;
  /** Estimated from the duration histogram (linear within a bucket, as Prometheus does); null without executed attempts. */
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface AgentRollups {
  /** The last 60 minutes, one point per minute, oldest first. */
  lastHour: RollupPoint[];
  /** The last 24 hours, one point per hour. */
  lastDay: RollupPoint[];
  /** The last 7 days, one point per hour. */
  lastWeek: RollupPoint[];
}

interface Tally {
  counts: Record<'success' | 'failure' | 'skipped' | 'cancelled', number>;
  buckets: number[];
}

const emptyTally = (): Tally => ({ counts: { success: 0, failure: 0, skipped: 0, cancelled: 0 }, buckets: new Array<number>(RUN_DURATION_BUCKETS_SECONDS.length + 1).fill(0) });

/**
 * The agent's charts at `now`: reads the ROLLUP_RETENTION_HOURS hour hashes (one pipelined HGETALL
 * each, one round trip; each holds at most 60 × (2 × 16 + 2) fields) and sums them in this process,
 * so Redis never spends long on one call.
 */
export async function readAgentRollups(redis: Redis, keys: Keys, agent: string, now: number): Promise<AgentRollups> {
  const currentHour = Math.floor(now / HOUR_MS);
  const firstHour = currentHour - ROLLUP_RETENTION_HOURS + 1;
  const pipeline = redis.pipeline();
  for (let hour = firstHour; hour <= currentHour; hour++) pipeline.hgetall(rollupKey(keys, agent, hour));
  const hashes = (await execOrThrow(pipeline)) as Record<string, string>[];

  const byHour = new Map<number, Tally>();
  const currentMinute = Math.floor(now / MINUTE_MS);
  const byMinute = new Map<number, Tally>();
  hashes.forEach((hash, i) => {
    const hour = firstHour + i;
    for (const [field, raw] of Object.entries(hash)) {
      const match = /^(\d{1,2}):([sfkc])(\d*)$/.exec(field);
      if (!match) continue;
      const count = Number(raw) || 0;
      const minute = hour * 60 + Number(match[1]);
      for (const [map, slot] of [
        [byHour, hour],
        [byMinute, minute],
      ] as const) {
        if (map === byMinute && minute <= currentMinute - 60) continue;
        let tally = map.get(slot);
        if (!tally) {
          tally = emptyTally();
          map.set(slot, tally);
        }
        tally.counts[LETTER_OUTCOME[match[2] as keyof typeof LETTER_OUTCOME]] += count;
        if (match[3] !== '') tally.buckets[Number(match[3])] = (tally.buckets[Number(match[3])] ?? 0) + count;
      }
    }
  });
  const series = (map: Map<number, Tally>, last: number, n: number, stepMs: number): RollupPoint[] =>
    Array.from({ length: n }, (_, i) => toPoint(last - n + 1 + i, stepMs, map.get(last - n + 1 + i)));
  return {
    lastHour: series(byMinute, currentMinute, 60, MINUTE_MS),
    lastDay: series(byHour, currentHour, 24, HOUR_MS),
    lastWeek: series(byHour, currentHour, ROLLUP_RETENTION_HOURS, HOUR_MS),
  };
}

function toPoint(slot: number, stepMs: number, tally: Tally | undefined): RollupPoint {
  const t = tally ?? emptyTally();
  return {
    at: new Date(slot * stepMs).toISOString(),
    ...t.counts,
    p50: quantile(t.buckets, 0.5),
    p95: quantile(t.buckets, 0.95),
    p99: quantile(t.buckets, 0.99),
  };
}

/** The q-quantile in ms from non-cumulative bucket counts, interpolated within its bucket; the overflow bucket reports its lower bound. */
export function quantile(buckets: readonly number[], q: number): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (n > 0 && seen + n >= rank) {
      const lower = i === 0 ? 0 : RUN_DURATION_BUCKETS_SECONDS[i - 1]! * 1000;
      const upper = RUN_DURATION_BUCKETS_SECONDS[i];
      if (upper === undefined) return lower;
      return Math.round(lower + ((upper * 1000 - lower) * (rank - seen)) / n);
    }
    seen += n;
  }
  return null;
}

/** Agents whose stale hours one pipeline deletes: bounds one round trip's size with many agents. */
const SWEEP_AGENTS_PER_PIPELINE = 50;

/**
 * Deletes every agent's hour hashes older than the retention (nightly.ts runs it). It resumes from
 * where the last sweep stopped (`rollupSweptKey`), so a night deletes about 24 hours per agent; the
 * first sweep, or one after a long pause, looks back ROLLUP_SWEEP_HOURS at most. Returns how many
 * hashes it deleted.
 */
export async function sweepRollups(redis: Redis, keys: Keys, agents: readonly string[], now: number): Promise<number> {
  const oldestKept = Math.floor(now / HOUR_MS) - ROLLUP_RETENTION_HOURS + 1;
  const swept = Number(await redis.get(rollupSweptKey(keys))) || 0;
  const from = Math.max(swept, oldestKept - ROLLUP_SWEEP_HOURS);
  let deleted = 0;
  if (from < oldestKept) {
    for (let i = 0; i < agents.length; i += SWEEP_AGENTS_PER_PIPELINE) {
      const pipeline = redis.pipeline();
      for (const agent of agents.slice(i, i + SWEEP_AGENTS_PER_PIPELINE)) {
        const stale: string[] = [];
        for (let hour = from; hour < oldestKept; hour++) stale.push(rollupKey(keys, agent, hour));
        pipeline.unlink(...stale);
      }
      for (const removed of await execOrThrow(pipeline)) deleted += Number(removed) || 0;
    }
  }
  if (oldestKept > swept) await redis.set(rollupSweptKey(keys), String(oldestKept));
  return deleted;
}
