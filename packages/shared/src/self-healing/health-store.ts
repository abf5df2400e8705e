import type { Redis, Result } from 'ioredis';
import { BUS_EMIT_LUA, BUS_HISTORY_LENGTH } from '../messaging/bus.js';
import type { AgentHealth, HealthState } from './health-rating.js';
import { healthKey, type Keys } from '../redis/keys.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { addGenerationBumpTo } from '../observability/snapshot-changes.js';

/**
 * Stores a rating and publishes `health:changed` when the state differs from the stored one.
 * Invariant: compare and write are one step, so however many monitors rate an agent, each change
 * is published once with the state it really replaced. An agent never rated counts as healthy.
 * A change the gate can see (becoming or ceasing to be unhealthy, an unhealthy agent's reasons) bumps the gate epoch.
 * KEYS: health hash, events stream, gate epoch. ARGV: state, reasonsJson, checkedAt, channel, maxlen, agent, atIso.
 * Returns 1 when the state changed.
 */
const WRITE_HEALTH_LUA = `${BUS_EMIT_LUA}
local health, stream = KEYS[1], KEYS[2]
local state, reasons, checkedAt = ARGV[1], ARGV[2], ARGV[3]
local stored = redis.call('HMGET', health, 'state', 'reasons')
local previous = stored[1] or 'healthy'
local previousReasons = stored[2] or '[]'
redis.call('HSET', health, 'state', state, 'reasons', reasons, 'checkedAt', checkedAt)
if (previous == 'unhealthy') ~= (state == 'unhealthy') or (state == 'unhealthy' and previousReasons ~= reasons) then
  redis.call('INCR', KEYS[3])
end
if previous == state then return 0 end
-- reasons are stored as JSON text: passed through as they are (see emitDataJson).
local data = '{"from":' .. cjson.encode(previous) .. ',"to":' .. cjson.encode(state) ..
  ',"reasons":' .. reasons .. ',"previousReasons":' .. previousReasons .. '}'
emitDataJson(stream, ARGV[4], ARGV[5], 'health:changed', ARGV[6], ARGV[7], data)
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotWriteHealth(health: string, stream: string, epoch: string, ...args: (string | number)[]): Result<number, Context>;
  }
}

/** Reads and writes agents' health records. */
export class HealthStore {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly historyLength: number;

  constructor({ redis, keys, historyLength = BUS_HISTORY_LENGTH }: { redis: Redis; keys: Keys; historyLength?: number }) {
    this.redis = redis;
    this.keys = keys;
    this.historyLength = historyLength;
    defineScripts(redis, { 'werkpilotWriteHealth-3': WRITE_HEALTH_LUA });
  }

  /** Stores each rating; returns the agents whose state changed (each published `health:changed`). */
  async write(ratings: Map<string, { state: HealthState; reasons: string[] }>, now: number): Promise<string[]> {
    if (ratings.size === 0) return [];
    const pipeline = this.redis.pipeline();
    const agents = [...ratings.keys()];
    for (const agent of agents) {
      const rating = ratings.get(agent)!;
      pipeline.werkpilotWriteHealth(
        healthKey(this.keys, agent),
        this.keys.eventsStream,
        this.keys.gateEpoch,
        rating.state,
        JSON.stringify(rating.reasons),
        now,
        this.keys.eventsChannel,
        this.historyLength,
        agent,
        new Date(now).toISOString(),
      );
    }
    // Every rating rewrites checkedAt: the snapshot re-reads health whole when the generation moves.
    addGenerationBumpTo(pipeline, this.keys, 'health');
    const replies = await execOrThrow(pipeline);
    return agents.filter((_, i) => replies[i] === 1);
  }

  async getMany(agents: readonly string[]): Promise<Map<string, AgentHealth>> {
    const pipeline = this.redis.pipeline();
    for (const agent of agents) pipeline.hmget(healthKey(this.keys, agent), 'state', 'reasons', 'checkedAt');
    const replies = await execOrThrow(pipeline);
    const result = new Map<string, AgentHealth>();
    agents.forEach((agent, i) => {
      const [state, reasons, checkedAt] = replies[i] as (string | null)[];
      result.set(agent, {
        state: (state as HealthState | null) ?? null,
        reasons: reasons ? (JSON.parse(reasons) as string[]) : [],
        checkedAt: checkedAt ? new Date(Number(checkedAt)).toISOString() : null,
      });
    });
    return result;
  }
}
