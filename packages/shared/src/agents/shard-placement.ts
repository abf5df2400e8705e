import { CronExpressionParser } from 'cron-parser';
import type { AgentSpec } from './agent.js';
import type { Registry } from './registry.js';

/**
 * Where each agent lives when the fleet is split into K shards (WERKPILOT_SHARDS).
 *
 * Agents that must share Redis scripts share a shard: every connected component of the dependency
 * graph (a dependency wait, a promotion and a pipeline touch the keys of both ends in one script),
 * joined with every other component that takes tokens from the same shared limiter (defineLimiter:
 * its log is read and written inside the run-admission script of each user). Components are then
 * placed largest expected load first, each on the shard with the least load so far (ties: the lower
 * index), so the placement depends only on the agents — every process that loads the same agents
 * directory computes the same one, and no coordination is needed.
 *
 * Expected load is runs per hour: Redis's cost is per run (the scripts around it), not per second of
 * agent code. A scheduled agent counts its cron's rate; an agent with no schedule (triggered only)
 * counts as one run per hour, since nothing tells how often it will be triggered.
 */
export interface ShardPlacement {
  /** K. */
  readonly count: number;
  readonly shards: readonly PlacedShard[];
  /** The shard index of `agent`; undefined for a name the registry does not know. */
  shardOf(agent: string): number | undefined;
}

export interface PlacedShard {
  readonly index: number;
  /** Its agents, sorted by name. */
  readonly agents: readonly string[];
  /** Its components (each sorted by name), largest expected load first. */
  readonly components: readonly (readonly string[])[];
  /** Expected runs per hour of its agents together. */
  readonly expectedRunsPerHour: number;
}

/** The rate a triggered-only agent counts with (runs per hour). */
export const UNSCHEDULED_RUNS_PER_HOUR = 1;

/** Cron rates are measured over at most this many ticks or this span, from a fixed instant. */
const RATE_TICKS = 200;
const RATE_SPAN_MS = 7 * 24 * 3_600_000;
const RATE_FROM = Date.UTC(2026, 0, 5);

/** Expected runs per hour of one agent (see above); the same in every process. */
export function expectedRunsPerHour(spec: Pick<AgentSpec, 'schedule'>): number {
  if (!spec.schedule) return UNSCHEDULED_RUNS_PER_HOUR;
  const ticks = CronExpressionParser.parse(spec.schedule.cron, { currentDate: new Date(RATE_FROM), ...(spec.schedule.tz ? { tz: spec.schedule.tz } : {}) });
  let count = 0;
  let last = RATE_FROM;
  while (count < RATE_TICKS) {
    const at = ticks.next().getTime();
    if (at - RATE_FROM > RATE_SPAN_MS) break;
    last = at;
    count += 1;
  }
  if (count === 0) return UNSCHEDULED_RUNS_PER_HOUR;
  const spanMs = count === RATE_TICKS ? Math.max(last - RATE_FROM, 1) : RATE_SPAN_MS;
  return (count * 3_600_000) / spanMs;
}

export function placeAgents(registry: Registry, count: number): ShardPlacement {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`shard count must be a positive integer, got ${count}`);
  const components = componentsOf(registry).map((agents) => ({
    agents,
    load: agents.reduce((sum, name) => sum + expectedRunsPerHour(registry.require(name)), 0),
  }));
  // Largest load first; equal loads by their first name, so the order never depends on load order.
  components.sort((a, b) => b.load - a.load || (a.agents[0]! < b.agents[0]! ? -1 : 1));
  const shards = Array.from({ length: count }, (_, index) => ({ index, agents: [] as string[], components: [] as string[][], expectedRunsPerHour: 0 }));
  const shardByAgent = new Map<string, number>();
  for (const component of components) {
    const lightest = shards.reduce((best, shard) => (shard.expectedRunsPerHour < best.expectedRunsPerHour ? shard : best));
    lightest.components.push(component.agents);
    lightest.agents.push(...component.agents);
    lightest.expectedRunsPerHour += component.load;
    for (const agent of component.agents) shardByAgent.set(agent, lightest.index);
  }
  for (const shard of shards) shard.agents.sort();
  return { count, shards, shardOf: (agent) => shardByAgent.get(agent) };
}

/** Connected components over dependencies and shared limiters, each sorted by name. */
function componentsOf(registry: Registry): string[][] {
  const parent = new Map(registry.names().map((name) => [name, name]));
  const find = (name: string): string => {
    let root = name;
    while (parent.get(root) !== root) root = parent.get(root)!;
    parent.set(name, root);
    return root;
  };
  const join = (a: string, b: string) => {
    const [ra, rb] = [find(a), find(b)];
    if (ra === rb) return;
    // The smaller name becomes the root: the union's shape never depends on the order of joins.
    const [low, high] = ra < rb ? [ra, rb] : [rb, ra];
    parent.set(high, low);
  };
  const limiterUser = new Map<string, string>();
  for (const spec of registry.list()) {
    for (const dependency of spec.dependsOn) if (parent.has(dependency)) join(spec.name, dependency);
    for (const { name } of spec.limiters) {
      const other = limiterUser.get(name);
      if (other === undefined) limiterUser.set(name, spec.name);
      else join(spec.name, other);
    }
  }
  const byRoot = new Map<string, string[]>();
  for (const name of registry.names()) {
    const root = find(name);
    byRoot.set(root, [...(byRoot.get(root) ?? []), name]);
  }
  return [...byRoot.values()].map((agents) => agents.sort());
}
