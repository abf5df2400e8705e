import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ConfigError } from '../process/errors.js';
import { QUEUE_NAMES } from '../queues/queues.js';
import { createKeys, shardLayoutKey } from '../redis/keys.js';
import type { Shards } from './shards.js';

/**
 * The guard that keeps a change of WERKPILOT_SHARDS from stranding runs. Each shard's prefix is
 * chosen for its K-th of the slot space (shard-prefixes.ts), so a new K gives every shard a new
 * prefix, and runs still queued under an old one would wait forever: no process of the new layout
 * serves those prefixes. The layout in use is recorded under the fleet prefix's own tag (absent:
 * one shard, the fleet prefix itself); a scheduler starting with another layout first counts the
 * runs waiting under every prefix the new layout drops, and refuses to start (exit 2) while there
 * are any. Once they are gone it records the new layout.
 *
 * What counts: waiting, prioritized, active and delayed runs — except a cron agent's next
 * tick (id `repeat:…`, never attempted), which the new layout's job schedulers produce afresh.
 */
export interface ShardLayout {
  count: number;
  prefixes: string[];
}

export async function checkShardLayout({ redis, fleetPrefix, shards, log }: { redis: Redis; fleetPrefix: string; shards: Shards; log: Logger }): Promise<void> {
  const key = shardLayoutKey(createKeys(fleetPrefix));
  const current: ShardLayout = { count: shards.count, prefixes: shards.all.map((shard) => shard.prefix) };
  const raw = await redis.get(key);
  const recorded: ShardLayout = raw ? (JSON.parse(raw) as ShardLayout) : { count: 1, prefixes: [fleetPrefix] };
  const dropped = recorded.prefixes.filter((prefix) => !current.prefixes.includes(prefix));
  if (dropped.length > 0) {
    const stranded = (await Promise.all(dropped.map(async (prefix) => ({ prefix, runs: await pendingRuns(redis, prefix) })))).filter((p) => p.runs > 0);
    if (stranded.length > 0) {
      const where = stranded.map((p) => `${p.prefix} (${p.runs} run${p.runs === 1 ? '' : 's'})`).join(', ');
      throw new ConfigError(
        `WERKPILOT_SHARDS changed from ${recorded.count} to ${current.count}, but runs still wait under prefixes the new layout does not serve: ${where}; ` +
          `run the fleet with WERKPILOT_SHARDS=${recorded.count} until they are done, then change it (docs/operations.md#shards)`,
      );
    }
    log.info({ from: recorded, to: current }, 'shard layout changed; no run waits under the dropped prefixes');
  }
  if (dropped.length === 0 && recorded.count === current.count) return;
  if (current.count === 1) await redis.del(key);
  else await redis.set(key, JSON.stringify(current));
}

/**
 * Read with plain commands, not a BullMQ Queue: a Queue object writes its `meta` key, and this must
 * leave nothing behind under a prefix the fleet no longer uses. `atm` is BullMQ's attempts-made field.
 */
async function pendingRuns(redis: Redis, prefix: string): Promise<number> {
  const keys = createKeys(prefix);
  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const [waiting, paused, prioritized, active, delayed] = await Promise.all([
    redis.llen(bull('wait')),
    redis.llen(bull('paused')),
    redis.zcard(bull('prioritized')),
    redis.llen(bull('active')),
    redis.zrange(bull('delayed'), 0, -1),
  ]);
  const ticks = delayed.filter((id) => id.startsWith('repeat:'));
  const attempts = await Promise.all(ticks.map((id) => redis.hget(bull(id), 'atm')));
  const nextTicks = attempts.filter((made) => made === null || made === '0').length;
  return waiting + paused + prioritized + active + delayed.length - nextTicks;
}
