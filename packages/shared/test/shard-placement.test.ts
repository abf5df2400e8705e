import { describe, expect, it } from 'vitest';
import { buildRegistry, createShards, expectedRunsPerHour, placeAgents, prefixSlot, shardConcurrencies, shardPrefix, type AgentModule } from '@werkpilot/shared';

const run = async () => null;
const agent = (name: string, cron: string | undefined, dependsOn: string[] = [], extra: Record<string, unknown> = {}): AgentModule => ({
  definition: { run, name, ...(cron ? { schedule: { cron } } : {}), dependsOn, ...extra },
  source: `/agents/${name}.ts`,
});
const limiter = (name: string): AgentModule => ({ definition: { kind: 'limiter', name, max: 10, perMs: 1000 }, source: `/agents/${name}.ts` });

/** Three components with known loads, a shared limiter joining two more, and a triggered-only agent. */
const fleet = buildRegistry([
  // every minute → 60 runs/h each: 180 runs/h
  agent('crawl', '* * * * *'),
  agent('parse', '* * * * *', ['crawl']),
  agent('index', '* * * * *', ['parse']),
  // every 5 minutes → 12 runs/h each: 24 runs/h
  agent('billing', '*/5 * * * *'),
  agent('invoices', '*/5 * * * *', ['billing']),
  // hourly, each alone but both on the `crm` limiter → one component of 2 runs/h
  agent('crm-sync', '0 * * * *', [], { limiters: ['crm'] }),
  agent('crm-report', '30 * * * *', [], { limiters: ['crm'] }),
  limiter('crm'),
  // every 20 seconds → 180 runs/h
  agent('heartbeat', '*/20 * * * * *'),
  // triggered only → counts as 1 run/h
  agent('manual', undefined),
]);

describe('shard placement', () => {
  it('reads the expected load off the cron: runs per hour', () => {
    expect(expectedRunsPerHour(fleet.require('crawl'))).toBe(60);
    expect(expectedRunsPerHour(fleet.require('billing'))).toBe(12);
    expect(expectedRunsPerHour(fleet.require('crm-sync'))).toBe(1);
    expect(expectedRunsPerHour(fleet.require('heartbeat'))).toBe(180);
    expect(expectedRunsPerHour(fleet.require('manual'))).toBe(1);
  });

  it('keeps every dependency component, and every group of users of one limiter, in one shard, heaviest first on the lightest shard', () => {
    const placement = placeAgents(fleet, 3);
    expect(placement.shards.map((shard) => ({ agents: shard.agents, components: shard.components, load: shard.expectedRunsPerHour }))).toEqual([
      // 180 (crawl…) and 180 (heartbeat) tie: the first name decides, so crawl's component goes first
      { agents: ['crawl', 'index', 'parse'], components: [['crawl', 'index', 'parse']], load: 180 },
      { agents: ['heartbeat'], components: [['heartbeat']], load: 180 },
      { agents: ['billing', 'crm-report', 'crm-sync', 'invoices', 'manual'], components: [['billing', 'invoices'], ['crm-report', 'crm-sync'], ['manual']], load: 27 },
    ]);
    expect(placement.shardOf('parse')).toBe(0);
    expect(placement.shardOf('crm-report')).toBe(2);
    expect(placement.shardOf('nobody')).toBeUndefined();
  });

  it('places the same agents the same way whatever order they were loaded in', () => {
    const reversed = buildRegistry(
      [...fleet.list()]
        .reverse()
        .map((spec): AgentModule => ({ definition: spec.definition, source: spec.source }))
        .concat(limiter('crm')),
    );
    expect(placeAgents(reversed, 3).shards.map((s) => s.agents)).toEqual(placeAgents(fleet, 3).shards.map((s) => s.agents));
  });

  it('with one shard keeps the fleet prefix and the registry itself: nothing moves', () => {
    const shards = createShards(fleet, 'werkpilot', 1);
    expect(shards.all).toHaveLength(1);
    expect(shards.all[0]!.prefix).toBe('werkpilot');
    expect(shards.all[0]!.keys.bullPrefix).toBe('{werkpilot}');
    expect(shards.all[0]!.keys.eventsChannel).toBe('werkpilot:events');
    expect(shards.all[0]!.registry).toBe(fleet);
  });

  it('gives each of K shards a prefix whose slot is in its K-th of the slot space, and keeps the bus channel the fleet’s', () => {
    const shards = createShards(fleet, 'werkpilot', 3);
    const slots = shards.all.map((shard) => prefixSlot(shard.prefix));
    expect(slots[0]).toBeLessThan(5461);
    expect(slots[1]).toBeGreaterThanOrEqual(5461);
    expect(slots[1]).toBeLessThan(10922);
    expect(slots[2]).toBeGreaterThanOrEqual(10922);
    expect(shards.all.map((shard) => shard.prefix.startsWith('werkpilot.shard'))).toEqual([true, true, true]);
    expect(shardPrefix('werkpilot', 1, 3)).toBe(shards.all[1]!.prefix);
    expect(new Set(shards.all.map((shard) => shard.keys.eventsChannel))).toEqual(new Set(['werkpilot:events']));
    expect(shards.all[1]!.keys.bullPrefix).toBe(`{${shards.all[1]!.prefix}}`);
  });

  it("gives a shard's scheduler its agents and their limiters only, and names the shard that serves any other", () => {
    const shards = createShards(fleet, 'werkpilot', 3);
    const third = shards.all[2]!.registry;
    expect(third.names().sort()).toEqual(['billing', 'crm-report', 'crm-sync', 'invoices', 'manual']);
    expect([...third.limiters.keys()]).toEqual(['crm']);
    expect([...shards.all[0]!.registry.limiters.keys()]).toEqual([]);
    expect(() => third.require('parse')).toThrow('agent parse is not served here: shard 0 serves it (the scheduler started with WERKPILOT_SHARD=0)');
    expect(() => third.require('nobody')).toThrow('unknown agent nobody');
  });

  it("splits a worker's concurrency over the shards that have agents", () => {
    expect(shardConcurrencies(10, [3])).toEqual([10]);
    expect(shardConcurrencies(10, [3, 1, 5])).toEqual([4, 3, 3]);
    expect(shardConcurrencies(10, [3, 0, 5])).toEqual([5, 0, 5]);
    expect(shardConcurrencies(2, [1, 1, 1])).toEqual([1, 1, 1]);
  });
});
