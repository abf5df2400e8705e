import { describe, expect, it } from 'vitest';
import { buildRegistry, ConfigError, createShards, expectedRunsPerHour, placeAgents, prefixSlot, shardConcurrencies, shardPrefix, type AgentModule, type Registry } from '@werkpilot/shared';

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

/** Where each agent is, as `shard: agents` lines. */
const layout = (registry: Registry, count: number) => placeAgents(registry, count).shards.map((shard) => shard.components.map((c) => c.join('+')).join(' '));

describe('shard placement', () => {
  it('reads the expected load off the cron: runs per hour', () => {
    expect(expectedRunsPerHour(fleet.require('crawl'))).toBe(60);
    expect(expectedRunsPerHour(fleet.require('billing'))).toBe(12);
    expect(expectedRunsPerHour(fleet.require('crm-sync'))).toBe(1);
    expect(expectedRunsPerHour(fleet.require('heartbeat'))).toBe(180);
    expect(expectedRunsPerHour(fleet.require('manual'))).toBe(1);
    expect(expectedRunsPerHour({ schedule: { cron: '0 9 * * 1-5' } })).toBeCloseTo(5 / 7 / 24, 10);
    expect(expectedRunsPerHour({ schedule: { cron: '0 0 1 * *' } })).toBeCloseTo(1 / 24 / (365.25 / 12), 10);
    expect(expectedRunsPerHour({ schedule: { cron: '0 0 1 1 *' } })).toBeCloseTo(1 / 24 / (365.25 / 12) / 12, 10);
  });

  it('keeps every dependency component, and every group of users of one limiter, in one shard', () => {
    const placement = placeAgents(fleet, 3);
    const shardOf = (agent: string) => placement.shardOf(agent);
    expect(new Set(['crawl', 'parse', 'index'].map(shardOf)).size).toBe(1);
    expect(new Set(['billing', 'invoices'].map(shardOf)).size).toBe(1);
    expect(new Set(['crm-sync', 'crm-report'].map(shardOf)).size).toBe(1);
    expect(placement.shards.flatMap((shard) => shard.agents).sort()).toEqual(fleet.names().sort());
    expect(placement.shardOf('nobody')).toBeUndefined();
  });

  it('places by the component alone: the same placement in every release (an upgrade must not move agents)', () => {
    // Rendezvous hashing of each component's first name: if this changes, every fleet's agents move.
    expect(layout(fleet, 2)).toEqual(['crm-report+crm-sync', 'crawl+index+parse heartbeat billing+invoices manual']);
    expect(layout(fleet, 4)).toEqual(['', 'crawl+index+parse heartbeat billing+invoices', '', 'crm-report+crm-sync manual']);
    expect(placeAgents(fleet, 4).shards.map((shard) => shard.expectedRunsPerHour)).toEqual([0, 384, 0, 3]);
  });

  it('moves nothing when another agent changes its schedule or an agent is added', () => {
    const changed = buildRegistry([
      ...fleet
        .list()
        .map((spec): AgentModule => ({ definition: spec.name === 'billing' ? { ...spec.definition, schedule: { cron: '* * * * * *' } } : spec.definition, source: spec.source })),
      limiter('crm'),
      agent('newcomer', '* * * * * *'),
    ]);
    for (const count of [2, 3, 4]) {
      const before = placeAgents(fleet, count);
      const after = placeAgents(changed, count);
      expect(fleet.names().filter((name) => before.shardOf(name) !== after.shardOf(name))).toEqual([]);
    }
  });

  it('spreads many components evenly over the shards', () => {
    const many = buildRegistry(Array.from({ length: 3000 }, (_, i) => agent(`agent-${i}`, undefined)));
    for (const shard of placeAgents(many, 3).shards) expect(Math.abs(shard.agents.length - 1000)).toBeLessThan(100);
    for (const shard of placeAgents(many, 8).shards) expect(Math.abs(shard.agents.length - 375)).toBeLessThan(60);
  });

  it('puts a pinned component on its pin, and refuses pins that cannot hold', () => {
    const pinned = buildRegistry([agent('crawl', '* * * * *', [], { shard: 2 }), agent('parse', '* * * * *', ['crawl']), agent('solo', '* * * * *', [], { shard: 0 })]);
    const placement = placeAgents(pinned, 3);
    expect([placement.shardOf('crawl'), placement.shardOf('parse'), placement.shardOf('solo')]).toEqual([2, 2, 0]);

    const clash = buildRegistry([agent('crawl', '* * * * *', [], { shard: 2 }), agent('parse', '* * * * *', ['crawl'], { shard: 1 })]);
    expect(() => placeAgents(clash, 3)).toThrow(ConfigError);
    expect(() => placeAgents(clash, 3)).toThrow(
      'agents crawl and parse are pinned to shards 2 and 1, but share scripts (one dependency component), so they live in one shard: pin them alike',
    );
    expect(() => placeAgents(pinned, 2)).toThrow('agent crawl is pinned to shard 2, but WERKPILOT_SHARDS=2 numbers the shards 0 to 1');
    expect(() => buildRegistry([agent('odd', undefined, [], { shard: -1 })])).toThrow('shard must be a whole number from 0 to 63, got -1');
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
    const shards = createShards(fleet, 'werkpilot', 2);
    const first = shards.all[0]!.registry;
    expect(first.names().sort()).toEqual(['crm-report', 'crm-sync']);
    expect([...first.limiters.keys()]).toEqual(['crm']);
    expect([...shards.all[1]!.registry.limiters.keys()]).toEqual([]);
    expect(() => first.require('parse')).toThrow('agent parse is not served here: shard 1 serves it (the scheduler started with WERKPILOT_SHARD=1)');
    expect(first.missingReason('nobody')).toBe('unknown agent nobody');
  });

  it("splits a worker's concurrency: one per shard with agents, the rest by expected load", () => {
    const shard = (agents: number, expectedRunsPerHour: number) => ({ agents, expectedRunsPerHour });
    expect(shardConcurrencies(10, [shard(3, 180)])).toEqual([10]);
    expect(shardConcurrencies(10, [shard(3, 180), shard(1, 1), shard(5, 27)])).toEqual([7, 1, 2]);
    expect(shardConcurrencies(10, [shard(3, 100), shard(0, 0), shard(5, 100)])).toEqual([5, 0, 5]);
    expect(shardConcurrencies(11, [shard(3, 100), shard(2, 100), shard(5, 100)])).toEqual([4, 4, 3]);
    expect(shardConcurrencies(2, [shard(1, 5), shard(1, 5), shard(1, 5)])).toEqual([1, 1, 1]);
  });
});
