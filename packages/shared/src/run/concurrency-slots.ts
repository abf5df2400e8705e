import type { AgentSpec } from '../agents/agent.js';
import { type Keys, leaseKey, leaseWaitersKey, runningIndexKey, slotsKey, slotWaitersKey, waitingIndexKey } from '../redis/keys.js';

/**
 * Concurrency limits, cluster-wide: at most `concurrency.limit` runs of an agent at once — per value
 * of `concurrency.key(data)` when the agent has one (per tenant, per account) — on any number of
 * workers. A run takes a slot in run admission's script and gives it back in its completion script
 * (or the cancel script), which hands it straight to the first run waiting for it, if any.
 *
 * Two representations of the same slot group, chosen per agent:
 *  - limit 1 — the overlap lease (overlap.ts): one string key holding the holder's run id. Every
 *    agent without controls has it, so what nearly every run pays stays one SET and one GETDEL.
 *  - limit N > 1 — a sorted set of holders scored by when their hold expires (the lease TTL from
 *    the take): a crashed worker's runs drop out once their TTL has passed, as a lease expires.
 * Both keep the same invariants: at most `limit` holders; only a holder releases (its completion is
 * fenced by its job lock, so a copy that lost its lock releases nothing); a release hands its slot
 * to the first waiter (FIFO) and promotes it in the same script, so no other run can take the slot
 * between the two; a run re-entering with the slot it holds (a retry, a run handed back by shutdown,
 * a hand-off's promoted waiter) keeps it.
 *
 * The key value is computed where the run's data is: in the worker, at admission, from the job's
 * data (and in the scheduler, from the same data, to validate a manual trigger and to cancel a
 * parked run). Computing it once at trigger time was the alternative, but cron runs are made inside
 * Redis by BullMQ's job schedulers — no code of ours runs for them — and retries, recoveries and
 * hand-backs would all need the stored value; a pure function of the run's data gives every one of
 * them the same value without a write. `key` must therefore be a pure function of `data`.
 *
 * For a keyed agent the slot groups of all its key values are also indexed per agent (`running` and
 * `waiting`, sorted sets scored by expiry), so the dashboard and metrics can show its usage without
 * scanning keys.
 */

/** How a run's agent limits concurrency: one lease, a set of N slots, or not at all (`allowAll`). */
export type SlotMode = 'lease' | 'slots' | 'none';

/** Longest key value (`concurrency.key`, `rateLimit.key`) a run may have; it becomes part of Redis keys. */
export const MAX_CONTROL_KEY_LENGTH = 200;

/** The slot group of one run: which keys its admission, completion and cancel touch. */
export interface SlotGroup {
  mode: SlotMode;
  /** The lease key, or the sorted set of holders. */
  holders: string;
  waiters: string;
  limit: number;
  /** The key value (keyed agents only). */
  keyValue?: string;
  /** The per-agent indexes of a keyed agent (running, waiting). */
  index?: { running: string; waiting: string };
}

export function slotModeOf(spec: Pick<AgentSpec, 'overlap' | 'concurrency'>): SlotMode {
  if (spec.overlap === 'allowAll') return 'none';
  return spec.concurrency.limit === 1 ? 'lease' : 'slots';
}

/** The slot group of a run of `spec` whose key value is `keyValue` (undefined: the agent has no key). */
export function slotGroupOf(keys: Keys, spec: Pick<AgentSpec, 'name' | 'overlap' | 'concurrency'>, keyValue?: string): SlotGroup {
  const mode = slotModeOf(spec);
  const { name } = spec;
  const group: SlotGroup =
    mode === 'slots'
      ? { mode, holders: slotsKey(keys, name, keyValue), waiters: slotWaitersKey(keys, name, keyValue), limit: spec.concurrency.limit }
      : { mode, holders: leaseKey(keys, name, keyValue), waiters: leaseWaitersKey(keys, name, keyValue), limit: 1 };
  if (keyValue !== undefined) {
    group.keyValue = keyValue;
    group.index = { running: runningIndexKey(keys, name), waiting: waitingIndexKey(keys, name) };
  }
  return group;
}

/**
 * The value `key` gives for a run's data: a non-empty string of at most MAX_CONTROL_KEY_LENGTH
 * characters. Throws ControlKeyError (with what the function did) otherwise.
 */
export function controlKeyValue(key: ((data: unknown) => string) | undefined, data: unknown, field: string, agent: string): string | undefined {
  if (!key) return undefined;
  let value: unknown;
  try {
    value = key(data);
  } catch (err) {
    throw new ControlKeyError(`${field} of agent ${agent} threw: ${(err as Error)?.message ?? String(err)}`);
  }
  if (typeof value !== 'string' || value.length === 0) {
    throw new ControlKeyError(`${field} of agent ${agent} must return a non-empty string, got ${typeof value === 'string' ? 'an empty string' : typeof value}`);
  }
  if (value.length > MAX_CONTROL_KEY_LENGTH) {
    throw new ControlKeyError(`${field} of agent ${agent} returned ${value.length} characters; at most ${MAX_CONTROL_KEY_LENGTH}`);
  }
  return value;
}

/** A `concurrency.key` or `rateLimit.key` function failed for a run's data. */
export class ControlKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControlKeyError';
  }
}

/**
 * Lua for the N-slot representation (needs PROMOTE_PARKED_LUA and LEASE_LUA), and the functions
 * that dispatch on the mode ('L' lease, 'Z' slots) for the scripts of admission, completion, parking
 * and cancel. Times are Redis's own clock (TIME, read once per script), so every worker's holds
 * expire on one clock.
 *
 * `slotTake(mode, holders, waiters, runId, ttl, limit, wasParked)` → true, or false when full.
 * `slotRelease(mode, holders, waiters, runId, ttl, priority, q)` → the run it handed the slot to, or false.
 * `slotOldest(mode, holders)` → the run holding longest (cancelOther's victim), or false.
 * `slotIsFree(mode, holders, runId, limit)` → whether `runId` could take a slot now.
 */
export const SLOTS_LUA = `
local nowCache
local function nowMs()
  if not nowCache then
    local t = redis.call('TIME')
    nowCache = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return nowCache
end
local function slotTake(mode, holders, waiters, runId, ttl, limit, wasParked)
  if mode == 'L' then return leaseTake(holders, waiters, runId, ttl, wasParked) end
  local now = nowMs()
  if not redis.call('ZSCORE', holders, runId) then
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
    if redis.call('ZCARD', holders) >= tonumber(limit) then return false end
  end
  redis.call('ZADD', holders, now + tonumber(ttl), runId)
  redis.call('PEXPIRE', holders, ttl)
  if wasParked then redis.call('LREM', waiters, 0, runId) end
  return true
end
local function slotRelease(mode, holders, waiters, runId, ttl, priority, q)
  if mode == 'L' then return leaseRelease(holders, waiters, runId, ttl, priority, q) end
  if redis.call('ZREM', holders, runId) == 0 then return false end
  local nextRun = redis.call('LPOP', waiters)
  if not nextRun then return false end
  redis.call('ZADD', holders, nowMs() + tonumber(ttl), nextRun)
  redis.call('PEXPIRE', holders, ttl)
  promoteParked(q, nextRun, priority)
  return nextRun
end
local function slotOldest(mode, holders)
  if mode == 'L' then
    local holder = redis.call('GET', holders)
    if not holder then return false end
    if string.sub(holder, -2) == '|q' then holder = string.sub(holder, 1, -3) end
    return holder
  end
  local oldest = redis.call('ZRANGEBYSCORE', holders, nowMs(), '+inf', 'LIMIT', 0, 1)
  return oldest[1] or false
end
local function slotIsFree(mode, holders, runId, limit)
  if mode == 'L' then
    local holder = redis.call('GET', holders)
    return not holder or holder == runId or holder == runId .. '|q'
  end
  if redis.call('ZSCORE', holders, runId) then return true end
  return redis.call('ZCOUNT', holders, nowMs(), '+inf') < tonumber(limit)
end
`;

/** The mode as the Lua functions name it. */
export function luaSlotMode(mode: SlotMode): 'L' | 'Z' {
  return mode === 'slots' ? 'Z' : 'L';
}
