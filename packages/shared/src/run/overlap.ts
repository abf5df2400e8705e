import type { Redis, Result } from 'ioredis';
import type { Keys } from '../redis/keys.js';
import { SLOTS_LUA, luaSlotMode, type SlotGroup } from './concurrency-slots.js';
import { PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * "Never two runs of one agent at once, across all workers": a per-agent lease in Redis, held by
 * the run id for the run's duration (its TTL outlives the run, so a crashed worker's lease expires
 * by itself). It is the concurrency limit 1 (concurrency-slots.ts; per key value for a keyed
 * agent). An agent with `overlap: 'skip'` skips a run that finds the lease held (reason
 * `overlap`); with `'queue'` (`bufferOne`, `cancelOther`) the run parks (delayed, no worker slot) as
 * a waiter, and the run that releases the lease hands it straight to the first waiter and promotes
 * it (FIFO: no other run can take the lease between the two).
 *
 * The lease's value is the holder's run id, with `|q` appended while waiters may be queued behind
 * it — so a release with nobody waiting (nearly all of them) costs one command.
 * A run re-entering with the lease it holds keeps it: a retry, a run handed back by shutdown or by
 * memory shedding, or the copy BullMQ recovers after a lost lock (the copy that lost it releases
 * nothing: run completion is fenced by the job's lock token).
 */

/** How much longer than the agent's timeout (and the worker's lock duration) a lease lives. */
export const LEASE_MARGIN_MS = 30_000;

/**
 * The lease's TTL for a run of an agent with `timeoutMs`, on workers with `lockDurationMs`. A run
 * that still holds its job lock has been running at most `timeoutMs` (it is aborted then) plus one
 * event-loop stall shorter than the lock duration (a longer one loses the lock), so its lease cannot
 * have expired when it releases it.
 */
export function leaseTtlMs(timeoutMs: number, lockDurationMs: number): number {
  return timeoutMs + lockDurationMs + LEASE_MARGIN_MS;
}

/**
 * Lua shared by run admission, run completion and cancel (needs PROMOTE_PARKED_LUA).
 *
 * `leaseTake(lease, waiters, runId, ttl, wasParked)`: takes the lease when free or already this
 * run's; returns true, or false when another run holds it. A run that was parked before drops out of
 * the waiters list (it may have woken by its deadline instead of by a hand-off).
 *
 * `leaseRelease(lease, waiters, runId, ttl, priority, q)`: releases the lease if this run holds it
 * and hands it to the first waiter, which it promotes. Invariants: only the holder releases; each
 * release hands the turn to exactly one waiter, in the order they queued. Finding another run's
 * lease (only possible if Redis lost ours) it puts that one back untouched.
 */
export const LEASE_LUA = `
local function leaseTake(lease, waiters, runId, ttl, wasParked)
  local holder = redis.call('SET', lease, runId, 'NX', 'PX', ttl, 'GET')
  if holder then
    if holder ~= runId and holder ~= runId .. '|q' then return false end
    redis.call('PEXPIRE', lease, ttl)
  end
  if wasParked then redis.call('LREM', waiters, 0, runId) end
  return true
end
local function leaseRelease(lease, waiters, runId, ttl, priority, q)
  local holder = redis.call('GETDEL', lease)
  if not holder or holder == runId then return false end
  if holder ~= runId .. '|q' then
    redis.call('SET', lease, holder, 'PX', ttl)
    return false
  end
  local nextRun = redis.call('LPOP', waiters)
  if not nextRun then return false end
  local value = nextRun
  if redis.call('LLEN', waiters) > 0 then value = nextRun .. '|q' end
  redis.call('SET', lease, value, 'PX', ttl)
  promoteParked(q, nextRun, priority)
  return nextRun
end
`;

/** How long a waiter's entry in a keyed agent's waiting index lives without a hand-off (its deadline re-registers it). */
export const WAITING_INDEX_TTL_MS = 86_400_000;

/**
 * Queues a parked run behind the holders of its slot group (SLOTS_LUA's modes), or promotes it at
 * once when a slot was released meanwhile. Call it only once the job is parked (delayed).
 * Invariants: a run is queued at most once; a lease's value says that waiters may be queued; with
 * `onlyOne` (bufferOne, cancelOther) at most one run waits — a second is promoted at once to be
 * skipped by its admission, which sees the first one waiting.
 * KEYS: 1 holders, 2 waiters list, 3..10 queue keys for the promotion, 11 the keyed agent's waiting index (if ARGV 6).
 * ARGV: 1 run id, 2 its priority, 3 mode ('L' | 'Z'), 4 limit, 5 '1' = onlyOne, 6 '1' = index.
 * Returns 'queued', 'free', 'full', or 'gone' when the run is no longer parked (cancelled meanwhile).
 */
const PARK_LUA = `${PROMOTE_PARKED_LUA}${LEASE_LUA}${SLOTS_LUA}
local runId, mode = ARGV[1], ARGV[3]
local q = slice(KEYS, 3, 10)
-- Parking is two calls (BullMQ's moveToDelayed, then this): a run cancelled or woken in between is
-- no longer delayed, and queueing it would hand the next slot to a run that never takes it.
if not redis.call('ZSCORE', q[1], runId) then return 'gone' end
if slotIsFree(mode, KEYS[1], runId, ARGV[4]) then
  promoteParked(q, runId, ARGV[2])
  return 'free'
end
local first = redis.call('LINDEX', KEYS[2], 0)
if ARGV[5] == '1' and first and first ~= runId then
  promoteParked(q, runId, ARGV[2])
  return 'full'
end
if not redis.call('LPOS', KEYS[2], runId) then
  redis.call('RPUSH', KEYS[2], runId)
  redis.call('PEXPIRE', KEYS[2], ${WAITING_INDEX_TTL_MS})
end
if ARGV[6] == '1' then redis.call('ZADD', KEYS[11], nowMs() + ${WAITING_INDEX_TTL_MS}, runId) end
if mode == 'L' then
  local holder = redis.call('GET', KEYS[1])
  if holder and string.sub(holder, -2) ~= '|q' then redis.call('SET', KEYS[1], holder .. '|q', 'KEEPTTL') end
end
return 'queued'
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotParkForSlot(numKeys: number, ...args: (string | number)[]): Result<'queued' | 'free' | 'full' | 'gone', Context>;
    werkpilotReleaseSlot(numKeys: number, ...args: (string | number)[]): Result<string | null, Context>;
  }
}

/**
 * Releases the slot a run holds, if it still holds it, and hands it to the first waiter — for a run
 * that ended without its completion script: BullMQ dead-lettered it for stalling too often.
 * KEYS: 1 holders, 2 waiters, 3..10 queue keys for the promotion, 11 the keyed agent's running index (if ARGV 5).
 * ARGV: 1 mode ('L' | 'Z'), 2 run id, 3 hold ttl ms (for the hand-off), 4 the agent's priority, 5 '1' = index.
 * Returns the run it handed the slot to, or false.
 */
const RELEASE_LUA = `${PROMOTE_PARKED_LUA}${LEASE_LUA}${SLOTS_LUA}
local handed = slotRelease(ARGV[1], KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4], slice(KEYS, 3, 10))
if ARGV[5] == '1' then redis.call('ZREM', KEYS[11], ARGV[2]) end
return handed
`;

/** Parks runs behind their slot group's holders (admission takes slots, completion releases and hands them on). */
export class OverlapGuard {
  private readonly redis: Redis;
  private readonly queueKeys: string[];

  constructor({ redis, keys }: { redis: Redis; keys: Keys }) {
    this.redis = redis;
    this.queueKeys = parkedQueueKeys(keys);
    defineScripts(redis, { werkpilotParkForSlot: PARK_LUA, werkpilotReleaseSlot: RELEASE_LUA });
  }

  /**
   * Queues the parked run `runId` behind its slot group's holders; answers `free` (and has promoted
   * the run) when a slot was released meanwhile, `full` (promoted too, to be skipped) when
   * `onlyOne` and another run already waits.
   */
  registerParked(group: SlotGroup, runId: string, priority: number, onlyOne: boolean): Promise<'queued' | 'free' | 'full' | 'gone'> {
    const scriptKeys = [group.holders, group.waiters, ...this.queueKeys];
    if (group.index) scriptKeys.push(group.index.waiting);
    return this.redis.werkpilotParkForSlot(scriptKeys.length, ...scriptKeys, runId, priority, luaSlotMode(group.mode), group.limit, onlyOne ? '1' : '', group.index ? '1' : '');
  }

  /** Releases `runId`'s slot of `group` if it holds it (see RELEASE_LUA); resolves to the run it was handed to, if any. */
  async release(group: SlotGroup, runId: string, ttlMs: number, priority: number): Promise<string | undefined> {
    const scriptKeys = [group.holders, group.waiters, ...this.queueKeys];
    if (group.index) scriptKeys.push(group.index.running);
    return (await this.redis.werkpilotReleaseSlot(scriptKeys.length, ...scriptKeys, luaSlotMode(group.mode), runId, ttlMs, priority, group.index ? '1' : '')) ?? undefined;
  }
}
