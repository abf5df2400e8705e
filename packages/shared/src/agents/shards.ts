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
 * many runs at once: even shares among the shards that have agents (the first ones get the
 * remainder), at least one each; none for a shard without agents. One shard gets it all.
 */
export function shardConcurrencies(concurrency: number, agentCounts: readonly number[]): number[] {
  if (agentCounts.length === 1) return [concurrency];
  const served = agentCounts.filter((count) => count > 0).length;
  let rank = 0;
  return agentCounts.map((count) => {
    if (count === 0) return 0;
    const share = Math.floor(concurrency / served) + (rank < concurrency % served ? 1 : 0);
    rank += 1;
    return Math.max(1, share);
  });
}
