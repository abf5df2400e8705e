import type { Redis } from 'ioredis';
import { OUTCOME_WINDOW, recentOutcomes } from './agent-state.js';
import type { AgentSpec } from '../agents/agent.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import type { Keys } from '../redis/keys.js';
import { percentileOfSorted } from '../observability/percentiles.js';
import { execOrThrow } from '../redis/redis-pipeline.js';

/**
 * The performance score, 0–100, over the last 100 runs:
 * `round(100 × (0.6·successRate + 0.25·clamp(1 − p95/timeoutMs) + 0.15·clamp(1 − restartsLastHour/maxRestartsPerHour)))`.
 * null until the agent has run (a skipped run is not a run).
 */
export interface ScoreInputs {
  /** Executed runs the success rate is over (0 ⇒ no score). */
  runs: number;
  /** Successes / runs over the last 100 executed runs, 0–1. */
  successRate: number;
  /** p95 duration (ms) over the same runs; null without samples. */
  p95: number | null;
  timeoutMs: number;
  restartsLastHour: number;
  maxRestartsPerHour: number;
}

const clamp = (x: number) => Math.min(1, Math.max(0, x));

export function computeScore(input: ScoreInputs): number | null {
  if (input.runs <= 0) return null;
  const latency = input.p95 === null ? 1 : clamp(1 - input.p95 / input.timeoutMs);
  const stability = input.maxRestartsPerHour > 0 ? clamp(1 - input.restartsLastHour / input.maxRestartsPerHour) : 1;
  return Math.round(100 * (0.6 * clamp(input.successRate) + 0.25 * latency + 0.15 * stability));
}

/**
 * Reads what the score needs (the last 100 outcomes and durations, the restarts in the window) and
 * computes it for each agent: one pipelined round trip plus the circuit read. The score is derived,
 * never stored, so it always reflects the latest run.
 */
export async function readScores(
  { redis, keys, circuit }: { redis: Redis; keys: Keys; circuit: CircuitBreaker },
  specs: readonly Pick<AgentSpec, 'name' | 'timeoutMs' | 'maxRestartsPerHour'>[],
): Promise<Map<string, number | null>> {
  const pipeline = redis.pipeline();
  for (const spec of specs) {
    pipeline.hget(keys.agentStats(spec.name), 'recent');
    pipeline.lrange(keys.agentOutcomes(spec.name), 0, OUTCOME_WINDOW - 1);
    pipeline.lrange(keys.agentDurations(spec.name), 0, OUTCOME_WINDOW - 1);
  }
  const [replies, circuits] = await Promise.all([execOrThrow(pipeline), circuit.getMany(specs.map((s) => s.name))]);
  const scores = new Map<string, number | null>();
  specs.forEach((spec, i) => {
    const outcomes = recentOutcomes(replies[i * 3] as string | null, replies[i * 3 + 1] as string[]);
    const durations = (replies[i * 3 + 2] as string[]).map(Number).sort((a, b) => a - b);
    scores.set(
      spec.name,
      computeScore({
        runs: outcomes.length,
        successRate: outcomes.length === 0 ? 0 : outcomes.filter((o) => o === 's').length / outcomes.length,
        p95: percentileOfSorted(durations, 95),
        timeoutMs: spec.timeoutMs,
        restartsLastHour: circuits.get(spec.name)!.restartsLastHour,
        maxRestartsPerHour: spec.maxRestartsPerHour,
      }),
    );
  });
  return scores;
}
