import { Router } from 'express';
import { prefixSlot, type Shards } from '@werkpilot/shared';

/**
 * `GET /api/shards`: the whole fleet's placement (WERKPILOT_SHARDS), the same from every shard's
 * scheduler since every process computes it from the same agents; `served` is this scheduler's.
 */
export function shardsRoutes({ fleet: shards, served }: { fleet: Shards; served: number }): Router {
  const router = Router();
  // Worked out on first request: with one shard, the loads are read off every cron only if asked.
  let body: object | undefined;
  const describe = () => ({
    count: shards.count,
    served,
    shards: shards.all.map((shard) => {
      const placed = shards.placement.shards[shard.index]!;
      return {
        index: shard.index,
        prefix: shard.prefix,
        slot: prefixSlot(shard.prefix),
        agents: placed.agents,
        components: placed.components,
        expectedRunsPerHour: Math.round(placed.expectedRunsPerHour * 100) / 100,
      };
    }),
  });
  router.get('/api/shards', (_req, res) => {
    body ??= describe();
    res.json(body);
  });
  return router;
}
