import type { Redis, Result } from 'ioredis';
import type { Keys } from '../redis/keys.js';
import { QUEUE_NAMES } from '../queues/queues.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * Promoting a parked run (a delayed job of the `agents` queue waiting for a dependency run or its
 * agent's overlap lease) from inside our own scripts, so that the script that finishes a run also
 * moves its waiting dependents to the queue — no later call, no extra round trip.
 *
 * BullMQ's own `promote` script (promote-9.lua) builds the job's hash key from ARGV, which the
 * project's rule forbids (every key a script touches is passed in KEYS, so each script stays on one
 * Redis Cluster slot even where the caller cannot know which runs wait). So this is BullMQ 6.7's
 * promote without the two steps that need the job hash:
 *  - the job's priority is not read from its hash: whoever parks a run records its priority beside
 *    its id (the waiters hash of a dependency run, or the agent's own priority for its lease
 *    waiters — every run of an agent is queued with the agent's priority, see runJobOptions);
 *  - the job hash's informational `delay` field is left as it was (BullMQ only shows it; nothing
 *    in the job's life reads it back for a job that is not a flow parent).
 * It also skips promote-9's clean-up of v4-era markers in the wait list (BullMQ ≥ 5 never writes
 * them). Everything else is the same: ZREM from `delayed`, then the wait list (priority 0) or the
 * prioritized set scored `priority × 2^32 + counter` (FIFO within a priority), the marker that wakes
 * blocked workers unless the queue is paused or at its concurrency limit, and the `waiting` event.
 * A run that is no longer delayed (its safety deadline fired, it was removed) is left alone.
 */

/** BullMQ's keys the promotion touches, in the order PROMOTE_PARKED_LUA's table expects. */
export const PARKED_QUEUE_KEY_SUFFIXES = ['delayed', 'wait', 'meta', 'prioritized', 'active', 'pc', 'events', 'marker'] as const;

/** How many KEYS the promotion takes (see parkedQueueKeys). */
export const PARKED_QUEUE_KEY_COUNT = PARKED_QUEUE_KEY_SUFFIXES.length;

/** The `agents` queue's keys a promotion needs, to pass in KEYS (built once per process). */
export function parkedQueueKeys(keys: Keys): string[] {
  return PARKED_QUEUE_KEY_SUFFIXES.map((suffix) => keys.bull(QUEUE_NAMES.agents, suffix));
}

/**
 * Lua: `promoteParked(q, runId, priority)` with `q` the table of PARKED_QUEUE_KEY_SUFFIXES' keys
 * (read from KEYS by the caller, e.g. `slice(KEYS, 9, 16)`). Returns true when it moved the run.
 */
export const PROMOTE_PARKED_LUA = `
local function promoteParked(q, runId, priority)
  if redis.call('ZREM', q[1], runId) == 0 then return false end
  local meta = redis.call('HMGET', q[3], 'paused', 'concurrency')
  local isPausedOrMaxed = meta[1] ~= false
  if not isPausedOrMaxed and meta[2] then isPausedOrMaxed = redis.call('LLEN', q[5]) >= tonumber(meta[2]) end
  priority = tonumber(priority) or 0
  if priority == 0 then
    redis.call('LPUSH', q[2], runId)
  else
    local counter = redis.call('INCR', q[6])
    redis.call('ZADD', q[4], priority * 0x100000000 + counter % 0x100000000, runId)
  end
  if not isPausedOrMaxed then redis.call('ZADD', q[8], 0, '0') end
  redis.call('XADD', q[7], '*', 'event', 'waiting', 'jobId', runId, 'prev', 'delayed')
  return true
end
local function slice(list, from, to)
  local out = {}
  for i = from, to do out[#out + 1] = list[i] end
  return out
end
`;

/** KEYS: PARKED_QUEUE_KEY_SUFFIXES' keys. ARGV: 1 run id, 2 its priority. Returns 1 when it moved the run. */
const PROMOTE_ONE_LUA = `${PROMOTE_PARKED_LUA}
if promoteParked(KEYS, ARGV[1], ARGV[2]) then return 1 end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotPromoteParked(...args: (string | number)[]): Result<number, Context>;
  }
}

/**
 * Promotes parked run `runId` now (a run whose rate-limit tokens are due); no-op when it is no
 * longer delayed (BullMQ promoted it at its delay, or it was cancelled). Resolves to whether it moved it.
 */
export async function promoteParkedRun(redis: Redis, keys: Keys, runId: string, priority: number): Promise<boolean> {
  defineScripts(redis, { [`werkpilotPromoteParked-${PARKED_QUEUE_KEY_COUNT}`]: PROMOTE_ONE_LUA });
  return (await redis.werkpilotPromoteParked(...parkedQueueKeys(keys), runId, priority)) === 1;
}
