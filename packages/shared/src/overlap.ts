import type { Redis, Result } from 'ioredis';
import type { Keys } from './keys.js';

/**
 * "Never two runs of one agent at once, across all workers": a per-agent lease in Redis, held by
 * the run id for the run's duration (its TTL outlives the agent's timeout, so a crashed worker's
 * lease expires by itself). An agent with `overlap: 'skip'` skips a run that finds the lease held
 * (reason `overlap`); with `'queue'` the run parks (delayed, no worker slot) as a waiter and the
 * releasing run promotes the first waiter — the same park-then-register protocol as
 * dependency-waits.ts, so no release is missed.
 */

/**
 * KEYS: 1 lease, 2 waiters list. ARGV: 1 run id, 2 ttl ms, 3 '1' to register as a waiter when busy.
 * Invariant: the lease has one holder; a run re-entering with the lease it holds keeps it (a retry
 * or stalled-job recovery of the same run). When registering, a free lease is NOT taken (the caller
 * is parked and must promote itself), and a run is queued at most once.
 * Returns { 'acquired' | 'busy' | 'free', lease pttl ms }.
 */
const ACQUIRE_LUA = `
local holder = redis.call('GET', KEYS[1])
local register = ARGV[3] == '1'
if not holder then
  if register then return { 'free', 0 } end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  return { 'acquired', tonumber(ARGV[2]) }
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return { 'acquired', tonumber(ARGV[2]) }
end
if register and not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 86400000)
end
return { 'busy', redis.call('PTTL', KEYS[1]) }
`;

/**
 * KEYS: 1 lease, 2 waiters list. ARGV: 1 run id.
 * Invariant: only the holder releases; each release hands the turn to exactly one waiter (FIFO).
 * Returns the waiter to promote, or false.
 */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return redis.call('LPOP', KEYS[2])
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotOverlapAcquire(lease: string, waiters: string, runId: string, ttlMs: number, register: string): Result<[string, number], Context>;
    werkpilotOverlapRelease(lease: string, waiters: string, runId: string): Result<string | null, Context>;
  }
}

export type OverlapAcquire = { status: 'acquired' } | { status: 'busy'; leaseLeftMs: number } | { status: 'free' };

/** How much longer than the agent's timeout a lease lives (the run's own bookkeeping after it). */
export const LEASE_MARGIN_MS = 30_000;

export class OverlapGuard {
  private readonly redis: Redis;
  private readonly keys: Keys;

  constructor({ redis, keys }: { redis: Redis; keys: Keys }) {
    this.redis = redis;
    this.keys = keys;
    if (typeof (redis as Partial<Redis>).werkpilotOverlapAcquire !== 'function') {
      redis.defineCommand('werkpilotOverlapAcquire', { numberOfKeys: 2, lua: ACQUIRE_LUA });
      redis.defineCommand('werkpilotOverlapRelease', { numberOfKeys: 2, lua: RELEASE_LUA });
    }
  }

  /** Takes the agent's lease for `runId` when free (or already its own). */
  tryAcquire(agent: string, runId: string, timeoutMs: number): Promise<OverlapAcquire> {
    return this.acquire(agent, runId, timeoutMs, false);
  }

  /**
   * Queues `runId` as a waiter for the lease. Call only once the job is parked (delayed). Answers
   * `free` when the lease was released meanwhile: then nothing was queued and the caller promotes
   * its job itself.
   */
  enqueueWaiter(agent: string, runId: string, timeoutMs: number): Promise<OverlapAcquire> {
    return this.acquire(agent, runId, timeoutMs, true);
  }

  /** Releases the lease if `runId` holds it; returns the waiter whose turn it is, to promote. */
  async release(agent: string, runId: string): Promise<string | null> {
    return this.redis.werkpilotOverlapRelease(this.leaseKey(agent), this.waitersKey(agent), runId);
  }

  private async acquire(agent: string, runId: string, timeoutMs: number, register: boolean): Promise<OverlapAcquire> {
    const [status, ttl] = await this.redis.werkpilotOverlapAcquire(
      this.leaseKey(agent),
      this.waitersKey(agent),
      runId,
      timeoutMs + LEASE_MARGIN_MS,
      register ? '1' : '0',
    );
    if (status === 'busy') return { status, leaseLeftMs: Math.max(0, Number(ttl)) };
    return { status: status as 'acquired' | 'free' };
  }

  private leaseKey(agent: string): string {
    return this.keys.key('agent', agent, 'lease');
  }

  private waitersKey(agent: string): string {
    return this.keys.key('agent', agent, 'lease-waiters');
  }
}
