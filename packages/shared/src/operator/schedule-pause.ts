import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import type { GateRule } from '../run/gating.js';
import { skipReason } from '../run/skip-reasons.js';
import { InvalidInputError } from '../process/errors.js';
import { upsertAgentScheduler } from '../queues/job-schedulers.js';
import { type Keys, pausedSchedulesSet } from '../redis/keys.js';
import type { Retention, RunJobData } from '../queues/queues.js';

/**
 * Pausing an agent's schedule without disabling the agent: its cron ticks stop, while manual runs,
 * pipelines and backfills still run (a disabled agent skips them all). Paused agents are one Redis
 * set, cluster-wide. Pausing removes the agent's BullMQ job scheduler, so no tick is made at all
 * (no skipped run per tick to wade through); resuming puts it back, with its next tick after now —
 * ticks of the paused time are not caught up, as with Temporal's pause. The leader's reconcile
 * leaves paused agents without a scheduler.
 *
 * The flag also moves the gate epoch and is a gate rule: a tick already queued when the schedule
 * was paused (or made by a scheduler a racing reconcile put back) is skipped with reason
 * `schedule paused` — so no scheduled run starts after the pause has answered.
 */

export interface SchedulePauseDeps {
  redis: Redis;
  keys: Keys;
  queue: Queue<RunJobData>;
  retention: Retention;
}

export const SCHEDULE_PAUSED_REASON = 'schedule paused';

function requireSchedule(spec: AgentSpec): void {
  if (!spec.schedule) throw new InvalidInputError(`agent ${spec.name} has no schedule to pause or resume`);
}

/** Pauses `spec`'s schedule. Idempotent; returns whether it was running before. */
export async function pauseSchedule({ redis, keys, queue }: SchedulePauseDeps, spec: AgentSpec): Promise<boolean> {
  requireSchedule(spec);
  const [[, added]] = (await redis.multi().sadd(pausedSchedulesSet(keys), spec.name).incr(keys.gateEpoch).exec()) as [[Error | null, number], unknown];
  await queue.removeJobScheduler(spec.name);
  return added === 1;
}

/** Resumes `spec`'s schedule: its next tick is the first after now. Idempotent; returns whether it was paused. */
export async function resumeSchedule(deps: SchedulePauseDeps, spec: AgentSpec): Promise<boolean> {
  requireSchedule(spec);
  const { redis, keys } = deps;
  const [[, removed]] = (await redis.multi().srem(pausedSchedulesSet(keys), spec.name).incr(keys.gateEpoch).exec()) as [[Error | null, number], unknown];
  await upsertAgentScheduler(deps.queue, spec, deps.retention);
  return removed === 1;
}

/** The agents among `agents` whose schedule is paused, in one round trip. */
export async function pausedAmong({ redis, keys }: { redis: Redis; keys: Keys }, agents: readonly string[]): Promise<Set<string>> {
  if (agents.length === 0) return new Set();
  const flags = await redis.smismember(pausedSchedulesSet(keys), ...agents);
  return new Set(agents.filter((_, i) => flags[i] === 1));
}

const SCHEDULE_PAUSED = skipReason(SCHEDULE_PAUSED_REASON);

/** Gate rule: a scheduled run (a tick, or a catch-up of one) of an agent whose schedule is paused is skipped. */
export function schedulePauseRule(): GateRule {
  return ({ spec, job, view }) => {
    const trigger = job.data.trigger;
    return (trigger === 'cron' || trigger === 'catch-up') && view.of(spec.name).isSchedulePaused ? SCHEDULE_PAUSED : null;
  };
}
