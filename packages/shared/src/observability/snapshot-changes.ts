import type { ChainableCommander, Redis } from 'ioredis';
import { changedAgentsKey, changeSequenceKey, type Keys, snapshotGenerationsKey } from '../redis/keys.js';
import { execOrThrow } from '../redis/redis-pipeline.js';

/**
 * The change feed the cluster snapshot builds from incrementally: whatever changes an agent's
 * figures marks the agent here, and each snapshot builder (one per scheduler replica) re-reads only
 * the agents marked since its own last build.
 *
 * Marks are a sorted set of agent names scored by a cluster-wide sequence number: marking an agent
 * again moves it to the newest score, so the set never holds more members than there are agents,
 * and a builder asks for "scores above my cursor" without consuming anything — every replica keeps
 * its own cursor and sees every change.
 *
 * Figures that change for many agents at once and rarely (the health monitor's round, a boot) bump a
 * generation instead; a builder that sees a new generation re-reads that part for every agent.
 */

/** The parts that change for many agents at once and are re-read whole when their generation moves. */
export type SnapshotPart = 'health' | 'boot';

/**
 * Marks agents changed. Invariant: the sequence number and the mark move together, so a builder
 * that has read marks up to sequence S has seen every change whose mark it could ever be missing.
 * KEYS: sequence counter, changed set. ARGV: agent names.
 */
const MARK_CHANGED_LUA = `
local args = {}
for i, agent in ipairs(ARGV) do
  args[#args + 1] = redis.call('INCR', KEYS[1])
  args[#args + 1] = agent
end
redis.call('ZADD', KEYS[2], unpack(args))
return #ARGV
`;

/** Agents per script call; it bounds one call's duration. */
const MARK_BATCH = 1000;

/**
 * Queues a mark of `agents` on a pipeline the caller executes (after the writes it announces).
 * Operator actions and tools mark rarely, so the script travels with each call (EVAL).
 */
export function addChangeMarkTo(pipeline: ChainableCommander, keys: Keys, agents: readonly string[]): void {
  for (let i = 0; i < agents.length; i += MARK_BATCH) {
    pipeline.eval(MARK_CHANGED_LUA, 2, changeSequenceKey(keys), changedAgentsKey(keys), ...agents.slice(i, i + MARK_BATCH));
  }
}

/** Marks `agents` changed on their own round trip (operator actions: circuit reset, enable, disable). */
export async function markAgentsChanged({ redis, keys }: { redis: Redis; keys: Keys }, agents: readonly string[]): Promise<void> {
  if (agents.length === 0) return;
  const pipeline = redis.pipeline();
  addChangeMarkTo(pipeline, keys, agents);
  await execOrThrow(pipeline);
}

/**
 * Lua: `markChanged(sequence, changed, agent)`, for scripts that change an agent's figures (the run
 * path's completion script, run-completion.ts): the same mark as MARK_CHANGED_LUA, inside the
 * script that made the change, so no builder can see the mark without the change.
 */
export const MARK_CHANGED_FN_LUA = `
local function markChanged(sequence, changed, agent)
  redis.call('ZADD', changed, redis.call('INCR', sequence), agent)
end
`;

/** Queues a bump of `part`'s generation on a pipeline the caller executes (after the writes). */
export function addGenerationBumpTo(pipeline: ChainableCommander, keys: Keys, part: SnapshotPart): void {
  pipeline.hincrby(snapshotGenerationsKey(keys), part, 1);
}

/** What changed since a builder's cursor. */
export interface ChangesSince {
  /** Agents marked after the cursor (each once). */
  agents: string[];
  /** The cursor to pass next time. */
  cursor: number;
}

/** How many marks one read returns; a bigger backlog is read in several calls of bounded cost. */
const CHANGES_PAGE = 2000;

/** Reads the agents marked after `cursor`, page by page. Read-only: other builders see the same marks. */
export async function readChangesSince(redis: Redis, keys: Keys, cursor: number): Promise<ChangesSince> {
  const agents: string[] = [];
  let next = cursor;
  for (;;) {
    const page = await redis.zrangebyscore(changedAgentsKey(keys), `(${next}`, '+inf', 'WITHSCORES', 'LIMIT', 0, CHANGES_PAGE);
    for (let i = 0; i < page.length; i += 2) {
      agents.push(page[i]!);
      next = Math.max(next, Number(page[i + 1]));
    }
    if (page.length < CHANGES_PAGE * 2) return { agents, cursor: next };
  }
}

/** The generations of the parts re-read whole (0 for a part never bumped). */
export async function readGenerations(redis: Redis, keys: Keys): Promise<Record<SnapshotPart, number>> {
  const raw = await redis.hgetall(snapshotGenerationsKey(keys));
  return { health: Number(raw.health ?? 0), boot: Number(raw.boot ?? 0) };
}
