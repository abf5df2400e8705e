import { CronExpressionParser } from 'cron-parser';
import type { AgentSpec } from './agent.js';
import type { Registry } from './registry.js';
import { ConfigError } from '../process/errors.js';

/**
 * Where each agent lives when the fleet is split into K shards (WERKPILOT_SHARDS).
 *
 * Agents that must share Redis scripts share a shard: every connected component of the dependency
 * graph (a dependency wait, a promotion and a pipeline touch the keys of both ends in one script),
 * joined with every other component that takes tokens from the same shared limiter (defineLimiter:
 * its log is read and written inside the run-admission script of each user).
 *
 * A component's shard is its pin (`shard` on any of its agents), or else the one rendezvous hashing
 * picks for its name (its first agent's): the shard with the highest hash of (name, shard). That
 * depends on nothing but the component, so a placement never changes because another agent's
 * schedule changed or an agent was added — a moved agent leaves its state behind (its disabled flag,
 * paused schedule, circuit), so moves must only happen when the operator changes K or the graph.
 * (A new K moves every agent anyway: shard-prefixes.ts picks each prefix for its K-th of the slots.)
 * Placement by hash balances the number of components, not their load: the expected load of every
 * shard is shown (werkpilot shards), and a pin moves a heavy component where there is room.
 *
 * Expected load is runs per hour, read off the cron's fields: Redis's cost is per run, not per
 * second of agent code. An agent with no schedule (triggered only) counts one run per hour.
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
  /** Its components (each sorted by name), largest expected load first, then by name. */
  readonly components: readonly (readonly string[])[];
  /** Expected runs per hour of its agents together. */
  readonly expectedRunsPerHour: number;
}

/** The rate a triggered-only agent counts with (runs per hour). */
export const UNSCHEDULED_RUNS_PER_HOUR = 1;

const DAYS_PER_MONTH = 365.25 / 12;

/**
 * Expected runs per hour of one agent, from the cron's fields (seconds × minutes × hours a day,
 * times the share of days and months it runs on; day of month and day of week restricted together
 * run on either, as cron does). Month lengths and time zones are averaged away.
 */
export function expectedRunsPerHour(spec: Pick<AgentSpec, 'schedule'>): number {
  if (!spec.schedule) return UNSCHEDULED_RUNS_PER_HOUR;
  const { fields } = CronExpressionParser.parse(spec.schedule.cron);
  const count = (values: readonly unknown[]) => new Set(values).size;
  const weekdays = new Set(fields.dayOfWeek.values.map((day) => (typeof day === 'number' ? day % 7 : day))).size;
  const monthDays = count(fields.dayOfMonth.values);
  const byMonthDay = Math.min(1, monthDays / DAYS_PER_MONTH);
  const byWeekday = weekdays / 7;
  const isMonthDayRestricted = monthDays < 31;
  const isWeekdayRestricted = weekdays < 7;
  let dayShare = 1;
  if (isMonthDayRestricted && isWeekdayRestricted) dayShare = byMonthDay + byWeekday - byMonthDay * byWeekday;
  else if (isMonthDayRestricted) dayShare = byMonthDay;
  else if (isWeekdayRestricted) dayShare = byWeekday;
  const perDay = count(fields.second.values) * count(fields.minute.values) * count(fields.hour.values);
  return (perDay / 24) * dayShare * (count(fields.month.values) / 12);
}

export function placeAgents(registry: Registry, count: number): ShardPlacement {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`shard count must be a positive integer, got ${count}`);
  const problems: string[] = [];
  const shards = Array.from({ length: count }, (_, index) => ({ index, agents: [] as string[], components: [] as { agents: string[]; load: number }[], expectedRunsPerHour: 0 }));
  const shardByAgent = new Map<string, number>();
  for (const agents of componentsOf(registry)) {
    const pins = new Map<number, string>();
    for (const name of agents) {
      const pin = registry.require(name).shard;
      if (pin !== undefined && !pins.has(pin)) pins.set(pin, name);
    }
    if (pins.size > 1) {
      problems.push(
        `agents ${[...pins.values()].join(' and ')} are pinned to shards ${[...pins.keys()].join(' and ')}, but share scripts (one dependency component${agents.length > 2 ? `: ${agents.join(', ')}` : ''}), so they live in one shard: pin them alike`,
      );
      continue;
    }
    const [pin] = pins.keys();
    if (pin !== undefined && pin >= count) {
      problems.push(`agent ${pins.get(pin)} is pinned to shard ${pin}, but WERKPILOT_SHARDS=${count} numbers the shards 0 to ${count - 1}`);
      continue;
    }
    const shard = shards[pin ?? rendezvousShard(agents[0]!, count)]!;
    const load = agents.reduce((sum, name) => sum + expectedRunsPerHour(registry.require(name)), 0);
    shard.components.push({ agents, load });
    shard.agents.push(...agents);
    shard.expectedRunsPerHour += load;
    for (const agent of agents) shardByAgent.set(agent, shard.index);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  return {
    count,
    shards: shards.map((shard) => ({
      index: shard.index,
      agents: shard.agents.sort(),
      components: shard.components.sort((a, b) => b.load - a.load || (a.agents[0]! < b.agents[0]! ? -1 : 1)).map((c) => c.agents),
      expectedRunsPerHour: shard.expectedRunsPerHour,
    })),
    shardOf: (agent) => shardByAgent.get(agent),
  };
}

/** Highest-random-weight (rendezvous) hashing: the shard whose hash with `name` is highest. */
function rendezvousShard(name: string, count: number): number {
  let best = 0;
  let bestScore = -1;
  for (let shard = 0; shard < count; shard += 1) {
    const score = fnv1a(`${name}\u0000${shard}`);
    if (score > bestScore) [best, bestScore] = [shard, score];
  }
  return best;
}

/**
 * 32-bit FNV-1a with MurmurHash3's finaliser: cheap, the same in every process and version of
 * Node. The finaliser matters: plain FNV-1a barely mixes the last character (the shard's digit), so
 * one shard would win for most names.
 */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
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
  return [...byRoot.values()].map((agents) => agents.sort()).sort((a, b) => (a[0]! < b[0]! ? -1 : 1));
}
