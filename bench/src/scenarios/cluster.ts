import { openBenchCluster } from '../bench-cluster.js';
import type { Measurement } from '../measurement.js';
import { median } from '../samples.js';
import type { Scenario } from '../scenario.js';
import { type DrainRedis, type Drained, type Side, drain, medianDrained } from './throughput.js';

/** Masters of the local cluster: the fewest `redis-cli --cluster create` accepts. */
const MASTERS = 3;
/**
 * The shard counts (WERKPILOT_SHARDS) measured on the cluster, each under the same load. With K = 1
 * every key of ours is under one hash tag, so one master does all the work; with K = MASTERS each
 * shard's prefix hashes into another master's third of the slots (shard-prefixes.ts).
 */
const SHARD_COUNTS: readonly number[] = [1, MASTERS];
const CONCURRENCY = 50;

/** One timed configuration: a side on a Redis with its fleet in `shards` shards, and the drains measured there. */
interface Configuration {
  side: Side;
  redis: DrainRedis;
  shards: number;
  drained: Drained[];
}

export const cluster: Scenario = {
  name: 'cluster',
  title: `no-op runs/s at c${CONCURRENCY} (as throughput) on single Redis and on a local ${MASTERS}-master Redis Cluster, and the Redis CPU per run on each master, vs raw BullMQ`,
  async run({ quick, redis, progress }) {
    const count = quick ? 1000 : 10000;
    const rounds = quick ? 1 : 3;
    const clusterRedis = await openBenchCluster({ masters: MASTERS });
    try {
      const single = { ours: configuration('ours', redis), raw: configuration('raw', redis) };
      const rawOnCluster = configuration('raw', clusterRedis);
      const oursOnCluster = new Map(SHARD_COUNTS.map((shards) => [shards, configuration('ours', clusterRedis, shards)]));
      const all = [single.raw, single.ours, rawOnCluster, ...oursOnCluster.values()];

      // Warm every path up (JIT, connections, the cluster's slot map, Lua script caches on each node).
      for (const c of all) await drain(c.redis, c.side, 10, quick ? 100 : 1000, { shards: c.shards });
      for (let round = 0; round < rounds; round++) {
        progress(`cluster: ${count} runs at concurrency ${CONCURRENCY} × ${all.length} configurations (round ${round + 1}/${rounds})`);
        // Rotating the order, so a slow minute of the shared machine does not land on one configuration.
        for (let i = 0; i < all.length; i++) {
          const c = all[(i + round) % all.length]!;
          c.drained.push(await drain(c.redis, c.side, CONCURRENCY, count, { shards: c.shards }));
        }
      }

      const ours = medianDrained(single.ours.drained);
      const raw = medianDrained(single.raw.drained);
      const rawCluster = medianOnCluster(rawOnCluster.drained);
      const rows: Measurement[] = [
        { metric: `runs/s at c${CONCURRENCY} on single Redis`, value: ours.runsPerSecond, baseline: raw.runsPerSecond, unit: 'runs/s' },
        { metric: `worker process CPU per run at c${CONCURRENCY} on single Redis`, value: ours.nodeCpuMicros, baseline: raw.nodeCpuMicros, unit: 'µs' },
        { metric: `Redis CPU per run at c${CONCURRENCY} on single Redis`, value: ours.redisCpuMicros, baseline: raw.redisCpuMicros, unit: 'µs' },
      ];
      const masters = Object.fromEntries(clusterRedis.masters.map((m) => [m.port, m.slots]));
      for (const [shards, c] of oursOnCluster) {
        const onCluster = medianOnCluster(c.drained);
        const on = `on the ${MASTERS}-master cluster, K=${shards}`;
        rows.push(
          { metric: `runs/s at c${CONCURRENCY} ${on}`, value: onCluster.runsPerSecond, baseline: rawCluster.runsPerSecond, unit: 'runs/s' },
          // The cost of cluster mode: each side's throughput on the cluster over its own on single Redis.
          {
            metric: `runs/s at c${CONCURRENCY} ${on} ÷ on single Redis`,
            value: onCluster.runsPerSecond / ours.runsPerSecond,
            baseline: rawCluster.runsPerSecond / raw.runsPerSecond,
            unit: '×',
          },
          { metric: `worker process CPU per run at c${CONCURRENCY} ${on}`, value: onCluster.nodeCpuMicros, baseline: rawCluster.nodeCpuMicros, unit: 'µs' },
          { metric: `Redis CPU per run at c${CONCURRENCY} ${on}, all masters`, value: onCluster.redisCpuMicros, baseline: rawCluster.redisCpuMicros, unit: 'µs', detail: { masters } },
          ...onCluster.byRank.map((micros, rank) => ({
            metric: `Redis CPU per run at c${CONCURRENCY} ${on}, master ${rank + 1} of ${MASTERS} by CPU`,
            value: micros,
            baseline: rawCluster.byRank[rank]!,
            unit: 'µs',
          })),
        );
      }
      return rows;
    } finally {
      await clusterRedis.close();
    }
  },
};

function configuration(side: Side, redis: DrainRedis, shards = 1): Configuration {
  return { side, redis, shards, drained: [] };
}

/**
 * Medians over the rounds, with each round's masters ranked busiest first: each drain uses a fresh
 * prefix, so its hash tag (and the master that serves it) differs from round to round, and what
 * carries over is how evenly the work spread, not which port did it.
 */
function medianOnCluster(drained: Drained[]): Drained & { byRank: number[] } {
  const ranked = drained.map((d) => [...d.redisCpuMicrosByServer].sort((a, b) => b - a));
  return { ...medianDrained(drained), byRank: ranked[0]!.map((_, rank) => median(ranked.map((r) => r[rank]!))) };
}
