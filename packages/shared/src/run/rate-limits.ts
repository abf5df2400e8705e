import type { Redis, Result } from 'ioredis';
import type { AgentSpec, LimiterDefinition } from '../agents/agent.js';
import { agentRateKey, type Keys, limiterKey } from '../redis/keys.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * Rate limits, exact across workers: an agent's own (`rateLimit: { max, perMs, key? }`, taken by
 * every run start) and shared limiters (`defineLimiter`, taken by the start of every run of an agent
 * that lists them, and by `ctx.limit` inside runs).
 *
 * Each limiter is a sliding-window log in Redis: a sorted set of granted tokens scored by the time
 * (Redis's clock) they were granted. "At most `max` per `perMs`" holds for every window of that
 * length, not only aligned ones — what an API's quota means. A request over budget is not refused:
 * it is granted the earliest time at which it fits, and that time is booked at once. Booking keeps
 * the log ordered (a booking is never before the last one), so a later request sees the earlier
 * ones' future tokens and queues behind them: each waiting run wakes exactly when its own tokens are
 * due, instead of every waiter waking when one token frees and all but one going back to sleep.
 *
 * A run whose tokens are in the future has already taken its concurrency slot (admission checks the
 * slot first, then the tokens, in one script), is parked (delayed, holding no worker slot, no
 * attempt spent) until that time, and is promoted then by a timer of the worker that parked it
 * (BullMQ's delayed-job handling is the fallback should that worker be gone). It starts without
 * asking again: its tokens are booked. Its `agent:rate-limited` event says for how long it waits.
 */

/** Most tokens one run start or one `ctx.limit` call may take (each token is one entry of the log). */
export const MAX_TOKENS_PER_TAKE = 1000;

/** One limiter a run takes tokens from. */
export interface RateBucket {
  /** The log's key. */
  key: string;
  max: number;
  perMs: number;
  cost: number;
  /** How events and metrics name it: `agent` for the agent's own limit, else the limiter's name. */
  label: string;
  /** Keyed logs expire once their last token leaves the window (an unbounded set of keys); the others live on. */
  expires: boolean;
}

/** The label of an agent's own rate limit in events, metrics and the API. */
export const AGENT_RATE_LABEL = 'rateLimit';

/**
 * The limiters every run start of `spec` takes tokens from, its own rate limit first (its key per
 * run: `rateKeyValue`). Limiters listed with cost 0 are left out: only `ctx.limit` takes from them.
 */
export function rateBucketsOf(keys: Keys, spec: AgentSpec, limiters: ReadonlyMap<string, LimiterDefinition>, rateKeyValue?: string): RateBucket[] {
  const buckets: RateBucket[] = [];
  if (spec.rateLimit) {
    buckets.push({
      key: agentRateKey(keys, spec.name, rateKeyValue),
      max: spec.rateLimit.max,
      perMs: spec.rateLimit.perMs,
      cost: 1,
      label: AGENT_RATE_LABEL,
      expires: rateKeyValue !== undefined,
    });
  }
  for (const use of spec.limiters) {
    const limiter = limiters.get(use.name);
    if (!limiter || use.cost === 0) continue;
    buckets.push({ key: limiterKey(keys, limiter.name), max: limiter.max, perMs: limiter.perMs, cost: use.cost, label: limiter.name, expires: false });
  }
  return buckets;
}

/**
 * Lua (needs SLOTS_LUA's nowMs): `rateEarliest(key, now, max, window, cost)` — the earliest time
 * `cost` more tokens fit in the log (now, or later when over budget); it drops tokens that left the
 * window. `rateBook(key, at, now, window, member, cost, expires)` — books them at `at`.
 * Invariant: every window of `window` ms holds at most `max` tokens, because each booking is at a
 * time no earlier than the last one and late enough that the `window` before it holds at most
 * `max - cost` tokens.
 */
export const RATE_LUA = `
local function rateEarliest(key, now, max, window, cost)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local over = redis.call('ZCARD', key) + cost - max
  if over <= 0 then return now end
  local at = tonumber(redis.call('ZRANGE', key, over - 1, over - 1, 'WITHSCORES')[2]) + window
  local last = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  if last > at then at = last end
  if now > at then at = now end
  return at
end
local function rateBook(key, at, now, window, member, cost, expires)
  if cost <= 0 then return end
  local entries = {}
  for i = 1, cost do
    entries[#entries + 1] = at
    entries[#entries + 1] = member .. '#' .. i
  end
  redis.call('ZADD', key, unpack(entries))
  if expires then
    local ttl = at - now + window
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
`;

/**
 * `ctx.limit`: books `cost` tokens of one limiter. KEYS: 1 the log. ARGV: 1 max, 2 window ms,
 * 3 cost, 4 member. Returns how many ms until they are due (0: now).
 */
const LIMIT_LUA = `
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
${RATE_LUA}
local now = nowMs()
local max, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at = rateEarliest(KEYS[1], now, max, window, cost)
rateBook(KEYS[1], at, now, window, ARGV[4], cost, false)
return at - now
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotTakeTokens(key: string, max: number, perMs: number, cost: number, member: string): Result<number, Context>;
  }
}

/** `ctx.limit` was called wrongly: a limiter the agent does not list, or a cost no budget can grant. */
export class LimiterUseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LimiterUseError';
  }
}

/**
 * Serves `ctx.limit(name, cost)` for the runs of one worker: books the tokens (one script) and
 * waits until they are due, or rejects with the run's signal's reason should it abort meanwhile.
 */
export class LimiterClient {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly limiters: ReadonlyMap<string, LimiterDefinition>;
  private sequence = 0;

  constructor({ redis, keys, limiters }: { redis: Redis; keys: Keys; limiters: ReadonlyMap<string, LimiterDefinition> }) {
    this.redis = redis;
    this.keys = keys;
    this.limiters = limiters;
    defineScripts(redis, { 'werkpilotTakeTokens-1': LIMIT_LUA });
  }

  /** Books `cost` tokens of `name` for run `runId` of `spec` and resolves when they are due; returns how long it waited (ms). */
  async take(spec: AgentSpec, runId: string, name: string, cost: number | undefined, signal: AbortSignal): Promise<number> {
    const limiter = this.limiters.get(name);
    if (!limiter || !spec.limiters.some((use) => use.name === name)) {
      throw new LimiterUseError(`ctx.limit('${name}'): agent ${spec.name} does not list limiter "${name}" in its limiters`);
    }
    const tokens = cost ?? 1;
    if (!Number.isInteger(tokens) || tokens < 1 || tokens > Math.min(limiter.max, MAX_TOKENS_PER_TAKE)) {
      throw new LimiterUseError(`ctx.limit('${name}', ${String(cost)}): cost must be a whole number from 1 to ${Math.min(limiter.max, MAX_TOKENS_PER_TAKE)}`);
    }
    signal.throwIfAborted();
    this.sequence = (this.sequence + 1) % Number.MAX_SAFE_INTEGER;
    const waitMs = await this.redis.werkpilotTakeTokens(limiterKey(this.keys, name), limiter.max, limiter.perMs, tokens, `${runId}:l${this.sequence}`);
    if (waitMs > 0) await sleepUnlessAborted(waitMs, signal);
    return waitMs;
  }
}

function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
