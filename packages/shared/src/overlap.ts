import type { Redis, Result } from 'ioredis';
import type { Keys } from './keys.js';
import { PARKED_QUEUE_KEY_COUNT, PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';

/**
 * "Never two runs of one agent at once, across all workers": a per-agent lease in Redis, held by
 * the run id for the run's duration (its TTL outlives the run, so a crashed worker's lease expires
 * by itself). An agent with `overlap: 'skip'` skips a run that finds the lease held (reason
 * `overlap`); with `'queue'` the run parks (delayed, no worker slot) as a waiter, and the run that
 * releases the lease hands it straight to the first waiter and promotes it (FIFO: no other run can
 * take the lease between the two).
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

export function leaseKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'lease');
}

export function leaseWaitersKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'lease-waiters');
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

/**
 * Queues a parked run behind the lease's holder, or promotes it at once when the lease was
 * released meanwhile. Call it only once the job is parked (delayed). Invariant: a run is queued at
 * most once, and the holder's value says that waiters may be queued.
 * KEYS: 1 lease, 2 waiters list, 3..10 queue keys for the promotion. ARGV: 1 run id, 2 its priority.
 * Returns 'queued' or 'free'.
 */
const PARK_LUA = `${PROMOTE_PARKED_LUA}
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] or holder == ARGV[1] .. '|q' then
  promoteParked(slice(KEYS, 3, 10), ARGV[1], ARGV[2])
  return 'free'
end
if not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 86400000)
end
if string.sub(holder, -2) ~= '|q' then redis.call('SET', KEYS[1], holder .. '|q', 'KEEPTTL') end
return 'queued'
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotParkForLease(...args: (string | number)[]): Result<'queued' | 'free', Context>;
  }
}

/** Parks runs of `overlap: 'queue'` agents behind their agent's lease (admission takes and completion releases it). */
export class OverlapGuard {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly queueKeys: string[];

  constructor({ redis, keys }: { redis: Redis; keys: Keys }) {
    this.redis = redis;
    this.keys = keys;
    this.queueKeys = parkedQueueKeys(keys);
    if (typeof (redis as Partial<Redis>).werkpilotParkForLease !== 'function') {
      redis.defineCommand('werkpilotParkForLease', { numberOfKeys: 2 + PARKED_QUEUE_KEY_COUNT, lua: PARK_LUA });
    }
  }

  /**
   * Queues the parked run `runId` behind the lease's holder; answers `free` (and has promoted the
   * run) when the lease was released meanwhile.
   */
  registerParked(agent: string, runId: string, priority: number): Promise<'queued' | 'free'> {
    return this.redis.werkpilotParkForLease(leaseKey(this.keys, agent), leaseWaitersKey(this.keys, agent), ...this.queueKeys, runId, priority);
  }
}
