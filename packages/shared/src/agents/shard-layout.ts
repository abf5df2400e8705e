import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import { ConfigError } from '../process/errors.js';
import { QUEUE_NAMES } from '../queues/queues.js';
import { createKeys, leaderKey, shardLayoutKey } from '../redis/keys.js';
import { defineScripts } from '../redis/redis-scripts.js';
import type { Shards } from './shards.js';

/**
 * The guard that keeps a change of shards (WERKPILOT_SHARDS, a pin, a dependency joining two
 * components) from stranding runs. A moved agent's runs still queued under its old prefix would be
 * taken there by a worker that no longer serves the agent (dead-lettered: "not served here") or,
 * for a prefix the new layout drops, by nobody at all. So the fleet's layout — K, the prefixes and
 * each agent's prefix — is recorded under the fleet prefix's own tag (none: one shard, every agent
 * under the fleet prefix), and every scheduler, before it serves and again before its leader plans,
 * compares it with its own: while a moved agent has runs waiting under its old prefix, or a dropped
 * prefix still has a leader (an old scheduler still running), it refuses with ShardLayoutError
 * (exit 2, one line naming the prefixes, the agents and what to do). Once nothing waits, the leader
 * records the new layout — compare-and-set, so a scheduler of another layout cannot overwrite it
 * unseen.
 *
 * What waits: waiting, prioritized, paused, active and delayed runs (parked ones and catch-up chains
 * are delayed too), except a job scheduler's own next tick of a cron agent, which the new layout's
 * schedules make afresh (the same test as run-cancel.ts's).
 */
export interface ShardLayout {
  count: number;
  prefixes: string[];
  /** Agent → the prefix of its shard. */
  placement: Record<string, string>;
}

/** A layout change that would strand runs (or a record this version cannot read). */
export class ShardLayoutError extends ConfigError {}

/**
 * KEYS: 1 the layout record. ARGV: 1 the record as read ('' = none), 2 the new one ('' = delete).
 * Returns 1 when written, 0 when the record changed since it was read.
 */
const RECORD_LAYOUT_LUA = `
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotRecordShardLayout(key: string, read: string, next: string): Result<0 | 1, Context>;
  }
}

export interface ShardLayoutCheck {
  redis: Redis;
  fleetPrefix: string;
  shards: Shards;
  log: Logger;
  /** Record the layout once it is safe (the leader); false only checks (every replica before it serves). */
  record: boolean;
}

/** Compare-and-set attempts: the leaders of several shards start together and record the same layout. */
const RECORD_ATTEMPTS = 3;

export async function checkShardLayout(check: ShardLayoutCheck): Promise<void> {
  const key = shardLayoutKey(createKeys(check.fleetPrefix));
  for (let attempt = 1; attempt <= RECORD_ATTEMPTS; attempt += 1) {
    if (await checkOnce(check, key)) return;
  }
  throw new ShardLayoutError(`the shard layout record ${key} kept changing while this scheduler checked it: start every process with the same WERKPILOT_SHARDS and agents`);
}

/** One read, check and (for the leader) compare-and-set; false when the record changed meanwhile. */
async function checkOnce({ redis, fleetPrefix, shards, log, record }: ShardLayoutCheck, key: string): Promise<boolean> {
  const current = layoutOf(shards);
  const raw = await redis.get(key);
  const recorded = raw === null ? undefined : parseLayout(raw, key);
  const before: ShardLayout = recorded ?? { count: 1, prefixes: [fleetPrefix], placement: Object.fromEntries(Object.keys(current.placement).map((agent) => [agent, fleetPrefix])) };

  const movedFrom = new Map<string, Set<string>>();
  for (const [agent, prefix] of Object.entries(current.placement)) {
    const old = before.placement[agent];
    if (old !== undefined && old !== prefix) movedFrom.set(old, (movedFrom.get(old) ?? new Set()).add(agent));
  }
  const dropped = before.prefixes.filter((prefix) => !current.prefixes.includes(prefix));
  const problems: string[] = [];
  for (const prefix of dropped) {
    if ((await redis.exists(leaderKey(createKeys(prefix)))) === 1) problems.push(`${prefix} still has a leading scheduler (one of the old layout is running)`);
  }
  for (const [prefix, agents] of movedFrom) {
    const waiting = await waitingRuns(redis, prefix, agents);
    if (waiting.length > 0) {
      const names = [...new Set(waiting)].sort();
      problems.push(`${prefix} holds ${waiting.length} run${waiting.length === 1 ? '' : 's'} of ${names.join(', ')}, which move${names.length === 1 ? 's' : ''} elsewhere`);
    }
  }
  if (problems.length > 0) {
    throw new ShardLayoutError(
      `the shard layout changes (WERKPILOT_SHARDS ${before.count} → ${current.count}, or pins or dependencies), but ${problems.join('; ')}: ` +
        `run the old layout until those runs are done and its schedulers are stopped, then start this one (docs/operations.md#shards)`,
    );
  }
  const next = current.count === 1 ? '' : JSON.stringify(current);
  if (!record || next === (raw ?? '')) return true;
  defineScripts(redis, { 'werkpilotRecordShardLayout-1': RECORD_LAYOUT_LUA });
  if ((await redis.werkpilotRecordShardLayout(key, raw ?? '', next)) === 0) return false;
  if (movedFrom.size > 0 || dropped.length > 0)
    log.info(
      { from: before.count, to: current.count, moved: [...movedFrom.values()].reduce((n, s) => n + s.size, 0) },
      'shard layout changed; no run waited under a moved agent’s old prefix',
    );
  return true;
}

function layoutOf(shards: Shards): ShardLayout {
  const placement: Record<string, string> = {};
  for (const shard of shards.all) for (const agent of shard.registry.names()) placement[agent] = shard.prefix;
  return { count: shards.count, prefixes: shards.all.map((shard) => shard.prefix), placement };
}

function parseLayout(raw: string, key: string): ShardLayout {
  try {
    const layout = JSON.parse(raw) as ShardLayout;
    if (Number.isInteger(layout.count) && Array.isArray(layout.prefixes) && typeof layout.placement === 'object' && layout.placement !== null) return layout;
  } catch {
    // reported below
  }
  throw new ShardLayoutError(`the shard layout record ${key} is not one this version wrote: check it (redis-cli GET '${key}') and delete it if no run waits under its prefixes`);
}

/**
 * The agents of the runs waiting under `prefix` that belong to `agents` (one entry per run). Read
 * with plain commands, not a BullMQ Queue, which would write its `meta` key under a prefix that may
 * be on its way out.
 */
async function waitingRuns(redis: Redis, prefix: string, agents: ReadonlySet<string>): Promise<string[]> {
  const keys = createKeys(prefix);
  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const ids = (
    await Promise.all([
      redis.lrange(bull('wait'), 0, -1),
      redis.lrange(bull('paused'), 0, -1),
      redis.zrange(bull('prioritized'), 0, -1),
      redis.lrange(bull('active'), 0, -1),
      redis.zrange(bull('delayed'), 0, -1),
    ])
  ).flat();
  const jobs = await Promise.all(ids.map(async (id) => ({ id, fields: await redis.hmget(bull(id), 'name', 'rjk') })));
  const ticks = await Promise.all(jobs.map(({ fields: [, scheduler] }) => (scheduler ? redis.zscore(bull('repeat'), scheduler) : Promise.resolve(null))));
  return jobs.flatMap(({ id, fields: [name, scheduler] }, i) => {
    const isNextTick = scheduler !== null && scheduler !== undefined && ticks[i] !== null && id === `repeat:${scheduler}:${ticks[i]}`;
    return name && agents.has(name) && !isNextTick ? [name] : [];
  });
}
