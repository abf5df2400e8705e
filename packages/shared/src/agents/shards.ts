import type { Registry } from './registry.js';
import { placeAgents, type ShardPlacement } from './shard-placement.js';
import { createKeys, type Keys } from '../redis/keys.js';
import { shardPrefix } from '../redis/shard-prefixes.js';

/**
 * The fleet split into WERKPILOT_SHARDS shards: each a complete Werkpilot namespace (its own key
 * prefix, so its own hash-tag slot: queues, agent state, leases, event history, leader lease) for
 * the agents shard-placement.ts puts there. A worker serves every shard; a scheduler plans and
 * serves one (WERKPILOT_SHARD). No script ever touches two shards, so none is cross-slot. What
 * crosses shards travels by pub/sub (the bus's channel is the fleet's) or is addressed to the
 * shard of the agent it concerns (`ctx.request`).
 */
export interface Shard {
  readonly index: number;
  /** Its key prefix (shard-prefixes.ts); the fleet's prefix itself with one shard. */
  readonly prefix: string;
  readonly keys: Keys;
  /** Its agents only (closed under dependencies and shared limiters). */
  readonly registry: Registry;
}

export interface Shards {
  readonly count: number;
  readonly placement: ShardPlacement;
  readonly all: readonly Shard[];
  /** The shard of a known agent; undefined for an unknown name. */
  of(agent: string): Shard | undefined;
}

export function createShards(registry: Registry, prefix: string, count: number): Shards {
  if (count === 1) {
    // One shard keeps the fleet's prefix and the registry object itself: exactly what it always
    // was. Its placement (loads read off every cron) is only worked out when someone asks.
    const only: Shard = { index: 0, prefix, keys: createKeys(prefix), registry };
    let placement: ShardPlacement | undefined;
    return {
      count,
      get placement() {
        placement ??= placeAgents(registry, 1);
        return placement;
      },
      all: [only],
      of: (agent) => (registry.get(agent) ? only : undefined),
    };
  }
  const placement = placeAgents(registry, count);
  const elsewhere = (name: string) => {
    const other = placement.shardOf(name);
    return other === undefined ? undefined : `shard ${other} serves it (the scheduler started with WERKPILOT_SHARD=${other})`;
  };
  const all = placement.shards.map((placed) => {
    const own = shardPrefix(prefix, placed.index, count);
    return { index: placed.index, prefix: own, keys: createKeys(own, prefix), registry: registry.subset(placed.agents, elsewhere) };
  });
  return {
    count,
    placement,
    all,
    of: (agent) => {
      const index = placement.shardOf(agent);
      return index === undefined ? undefined : all[index];
    },
  };
}

/**
 * WORKER_CONCURRENCY split over the shards a worker serves, so the process still runs about that
 * many runs at once: one for each shard that has agents, the rest in proportion to their expected
 * runs per hour (largest remainders first, then the lower index), none for a shard without agents.
 * The one exception to the total: more shards with agents than WORKER_CONCURRENCY get one each.
 * One shard gets it all.
 */
export function shardConcurrencies(concurrency: number, shards: readonly { agents: number; expectedRunsPerHour: number }[]): number[] {
  if (shards.length === 1) return [concurrency];
  const served = shards.map((shard, index) => ({ index, load: shard.expectedRunsPerHour })).filter((_, index) => shards[index]!.agents > 0);
  const shares = shards.map((shard) => (shard.agents > 0 ? 1 : 0));
  const rest = Math.max(0, concurrency - served.length);
  const total = served.reduce((sum, shard) => sum + shard.load, 0);
  if (rest === 0 || total === 0) return shares;
  const exact = served.map((shard) => ({ index: shard.index, value: (rest * shard.load) / total }));
  let left = rest;
  for (const { index, value } of exact) {
    shares[index]! += Math.floor(value);
    left -= Math.floor(value);
  }
  const byRemainder = [...exact].sort((a, b) => b.value - Math.floor(b.value) - (a.value - Math.floor(a.value)) || a.index - b.index);
  for (const { index } of byRemainder.slice(0, left)) shares[index]! += 1;
  return shares;
}

/** A worker's WORKER_CONCURRENCY for each of the fleet's shards (see shardConcurrencies). */
export function concurrencyPerShard(shards: Shards, concurrency: number): number[] {
  if (shards.count === 1) return [concurrency];
  return shardConcurrencies(
    concurrency,
    shards.placement.shards.map((shard) => ({ agents: shard.agents.length, expectedRunsPerHour: shard.expectedRunsPerHour })),
  );
}
