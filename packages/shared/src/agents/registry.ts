import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { AGENT_DEFAULTS, type AgentDefinition, type AgentSpec, type LimiterDefinition, type Priority } from './agent.js';
import { checkControls, checkLimiter, checkLimiterUses, controlsOf, type LimiterUseRead } from './controls-validation.js';
import { describeValue } from './value-description.js';
import { cronProblem, timezoneProblem } from './cron.js';
import { computeDepths, findCycles, layersOf, topologicalOrder, transitiveDependents } from './dag.js';
import { AgentNotFoundError, RegistryError } from '../process/errors.js';
import { MAX_TIMER_MS } from '../run/size-limits.js';
import { MAX_SHARDS } from '../process/config.js';
import { enableTypeScriptAgents } from './typescript-agents.js';

/**
 * The set of agents a process knows, validated as a whole before anything touches Redis.
 * Both apps load the same modules: the scheduler reads metadata, workers run them.
 */
export class Registry {
  readonly agents: ReadonlyMap<string, AgentSpec>;
  /** Shared limiters (defineLimiter) by name. */
  readonly limiters: ReadonlyMap<string, LimiterDefinition>;
  /** Layer k = names of the agents of depth k. */
  readonly layers: string[][];
  private readonly graph: Map<string, string[]>;
  /** For a shard's registry: where an agent of another shard is (AgentNotFoundError's hint). */
  private readonly elsewhere: ((name: string) => string | undefined) | undefined;

  constructor(specs: AgentSpec[], limiters: LimiterDefinition[] = [], elsewhere?: (name: string) => string | undefined) {
    this.elsewhere = elsewhere;
    this.agents = new Map(specs.map((s) => [s.name, s]));
    this.limiters = new Map(limiters.map((l) => [l.name, l]));
    this.graph = new Map(specs.map((s) => [s.name, s.dependsOn]));
    this.layers = layersOf(new Map(specs.map((s) => [s.name, s.depth])));
  }

  get size(): number {
    return this.agents.size;
  }

  get(name: string): AgentSpec | undefined {
    return this.agents.get(name);
  }

  /** Why `name` is not here: unknown, or (a shard's registry) served by another shard. */
  missingReason(name: string): string {
    return new AgentNotFoundError(name, this.elsewhere?.(name)).message;
  }

  /** The agent, or an AgentNotFoundError naming it. */
  require(name: string): AgentSpec {
    const spec = this.agents.get(name);
    if (!spec) throw new AgentNotFoundError(name, this.elsewhere?.(name));
    return spec;
  }

  list(): AgentSpec[] {
    return [...this.agents.values()];
  }

  names(): string[] {
    return [...this.agents.keys()];
  }

  /**
   * The registry of `names` alone, with the shared limiters they use. For a shard (shards.ts), whose
   * agents are closed under dependencies, so every dependency still resolves.
   */
  subset(names: Iterable<string>, elsewhere?: (name: string) => string | undefined): Registry {
    const specs = [...names].map((name) => this.require(name));
    const used = new Set(specs.flatMap((spec) => spec.limiters.map((l) => l.name)));
    return new Registry(
      specs,
      [...this.limiters.values()].filter((limiter) => used.has(limiter.name)),
      elsewhere,
    );
  }

  /** Every transitive dependent of `name`, in dependency order. */
  dependentsOf(name: string): string[] {
    return this.inDependencyOrder(transitiveDependents(this.graph, name));
  }

  /** Orders names so that each comes after its dependencies. */
  inDependencyOrder(names: Iterable<string>): string[] {
    return topologicalOrder(new Map(this.list().map((s) => [s.name, s.depth])), names);
  }
}

const NAME_PATTERN = /^[a-z0-9][a-z0-9-]*$/;
const AGENT_FILE = /\.(m?js|ts)$/;
/** Type declarations, tests, and `_helpers` are not agents. */
const NOT_AGENT_FILE = /(^_)|(\.(d|test|spec)\.(m?js|ts)$)/;

/** A loaded module's default export and the file it came from. */
export interface AgentModule {
  definition: unknown;
  source: string;
}

/**
 * Imports every agent module in `dir` (`.js`, `.mjs`, `.ts`; TypeScript runs without a build, see
 * typescript-agents.ts) and validates them together. Throws RegistryError listing
 * every problem; touches no Redis.
 */
export async function loadRegistry(dir: string): Promise<Registry> {
  const absolute = path.resolve(dir);
  let files: string[];
  try {
    if (!(await stat(absolute)).isDirectory()) throw new Error('not a directory');
    files = (await readdir(absolute)).filter((f) => AGENT_FILE.test(f) && !NOT_AGENT_FILE.test(f)).sort();
  } catch (err) {
    throw new RegistryError([`WERKPILOT_AGENTS=${dir}: cannot read the directory (${(err as Error).message})`]);
  }
  const problems: string[] = [];
  const modules: AgentModule[] = [];
  if (files.some((file) => file.endsWith('.ts'))) await enableTypeScriptAgents();
  for (const file of files) {
    const source = path.join(absolute, file);
    try {
      const mod = (await import(/* @vite-ignore */ pathToFileURL(source).href)) as { default?: unknown };
      modules.push({ definition: mod.default, source });
    } catch (err) {
      problems.push(`${file}: failed to load: ${firstLine((err as Error).message)}`);
    }
  }
  if (files.length === 0) problems.push(`WERKPILOT_AGENTS=${dir}: no agent modules (.js, .mjs, .ts) found`);
  return buildRegistry(modules, problems);
}

/** Validates definitions as a whole; throws RegistryError with every problem found. */
export function buildRegistry(modules: AgentModule[], earlierProblems: string[] = []): Registry {
  const problems = [...earlierProblems];
  const specs: AgentSpec[] = [];
  const sources = new Map<string, string>();
  // Every agent whose name and dependsOn could be read, valid or not, so that the graph's problems
  // (unknown dependencies, cycles) are reported beside each agent's own (a bad cron AND an unknown
  // dependency are both listed).
  const declared = new Map<string, string[]>();
  const limiters: LimiterDefinition[] = [];
  const limiterSources = new Map<string, string>();
  /** Limiters each agent lists, checked against the known ones once all modules are read. */
  const limiterUses: { agent: string; uses: LimiterUseRead[] }[] = [];

  for (const { definition, source } of modules) {
    const where = path.basename(source);
    if (isLimiterModule(definition)) {
      const checked = checkLimiter(definition, where);
      problems.push(...checked.problems);
      if (!checked.limiter) continue;
      const first = limiterSources.get(checked.limiter.name);
      if (first !== undefined) problems.push(`duplicate limiter name "${checked.limiter.name}" in ${first} and ${where}`);
      else {
        limiterSources.set(checked.limiter.name, where);
        limiters.push(checked.limiter);
      }
      continue;
    }
    const result = normalise(definition, where, source);
    problems.push(...result.problems);
    if (!result.name) continue;
    const first = sources.get(result.name);
    if (first !== undefined) {
      problems.push(`duplicate agent name "${result.name}" in ${first} and ${where}`);
      continue;
    }
    sources.set(result.name, where);
    declared.set(result.name, result.dependsOn ?? []);
    if (result.limiterUses) limiterUses.push({ agent: `agent "${result.name}" (${where})`, uses: result.limiterUses });
    if (result.spec) specs.push(result.spec);
  }
  const limiterByName = new Map(limiters.map((l) => [l.name, l]));
  for (const { agent, uses } of limiterUses) problems.push(...checkLimiterUses(agent, uses, limiterByName));

  for (const [name, dependsOn] of declared) {
    for (const dep of dependsOn) {
      if (dep === name) continue; // reported as a cycle
      if (!sources.has(dep)) problems.push(`agent "${name}" depends on unknown agent "${dep}"`);
    }
  }
  for (const cycle of findCycles(declared)) problems.push(`dependency cycle: ${cycle.join(' → ')}`);

  if (problems.length > 0) throw new RegistryError(problems);
  const graph = new Map(specs.map((s) => [s.name, s.dependsOn]));

  const depths = computeDepths(graph);
  for (const spec of specs) spec.depth = depths.get(spec.name)!;
  return new Registry(specs, limiters);
}

/** A module whose default export is defineLimiter({...}) (or any object marked `kind: 'limiter'`). */
function isLimiterModule(definition: unknown): definition is Record<string, unknown> {
  return typeof definition === 'object' && definition !== null && (definition as { kind?: unknown }).kind === 'limiter';
}

/** One definition checked: its spec when valid, its problems, and its name and dependencies when readable. */
interface Normalised {
  spec?: AgentSpec;
  problems: string[];
  name?: string;
  dependsOn?: string[];
  /** The shared limiters it lists, when readable (checked against the defined ones later). */
  limiterUses?: LimiterUseRead[];
}

function normalise(raw: unknown, where: string, source: string): Normalised {
  if (raw === null || typeof raw !== 'object') {
    return { problems: [`${where}: the default export must be defineAgent({ ... }), got ${describeValue(raw)}`] };
  }
  const def = raw as Partial<AgentDefinition> & Record<string, unknown>;
  const problems: string[] = [];
  const label = typeof def.name === 'string' ? `agent "${def.name}" (${where})` : where;
  const problem = (text: string) => problems.push(`${label}: ${text}`);

  if (typeof def.name !== 'string' || !NAME_PATTERN.test(def.name)) {
    problem(`name must match [a-z0-9][a-z0-9-]*, got ${describeValue(def.name)}`);
  }
  if (typeof def.run !== 'function') problem('run must be a function');
  for (const hook of ['healthCheck', 'onRequest'] as const) {
    if (def[hook] !== undefined && typeof def[hook] !== 'function') problem(`${hook} must be a function when given`);
  }

  if (def.schedule !== undefined) {
    const s = def.schedule as { cron?: unknown; tz?: unknown };
    if (s === null || typeof s !== 'object') problem('schedule must be { cron, tz? }');
    else {
      const tzIssue = s.tz === undefined ? null : typeof s.tz === 'string' ? timezoneProblem(s.tz) : 'tz must be a string';
      if (tzIssue) problem(`schedule.tz ${tzIssue}`);
      const cronIssue = typeof s.cron === 'string' ? cronProblem(s.cron, tzIssue ? undefined : (s.tz as string | undefined)) : 'schedule.cron must be a string';
      if (cronIssue) problem(cronIssue);
    }
  }
  if (def.priority !== undefined && ![1, 2, 3].includes(def.priority as number)) {
    problem(`priority must be 1 (critical), 2 (important) or 3 (normal), got ${describeValue(def.priority)}`);
  }
  const dependsOn = def.dependsOn ?? [];
  const hasReadableDependsOn = Array.isArray(dependsOn) && dependsOn.every((d) => typeof d === 'string');
  if (!hasReadableDependsOn) problem('dependsOn must be an array of agent names');
  checkPositiveInt(def.timeoutMs, 'timeoutMs', problem, MAX_TIMER_MS, 'ms (2^31 − 1, about 24.8 days: Node fires a longer timer at once)');
  checkPositiveInt(def.maxRestartsPerHour, 'maxRestartsPerHour', problem, MAX_RESTARTS_PER_HOUR);
  if (def.shard !== undefined && !(Number.isInteger(def.shard) && def.shard >= 0 && def.shard < MAX_SHARDS)) {
    problem(`shard must be a whole number from 0 to ${MAX_SHARDS - 1}, got ${describeValue(def.shard)}`);
  }
  const limiterUses = checkControls(def, problem);
  const retry = def.retry ?? {};
  if (typeof retry !== 'object' || retry === null) problem('retry must be { attempts, backoff: { type, delayMs } }');
  else {
    checkPositiveInt(retry.attempts, 'retry.attempts', problem, MAX_ATTEMPTS);
    if (retry.backoff !== undefined) {
      if (retry.backoff.type !== undefined && retry.backoff.type !== 'exponential') {
        problem(`retry.backoff.type must be "exponential", got ${describeValue(retry.backoff.type)}`);
      }
      const d = retry.backoff.delayMs;
      if (d !== undefined && !(Number.isInteger(d) && d >= 0)) problem(`retry.backoff.delayMs must be a whole number of ms, got ${describeValue(d)}`);
      else if (d !== undefined && d > MAX_TIMER_MS) problem(`retry.backoff.delayMs must be at most ${MAX_TIMER_MS} ms (2^31 − 1, about 24.8 days), got ${describeValue(d)}`);
    }
  }
  const readable = {
    ...(typeof def.name === 'string' && NAME_PATTERN.test(def.name) ? { name: def.name } : {}),
    ...(hasReadableDependsOn ? { dependsOn: [...new Set(dependsOn as string[])] } : {}),
    ...(limiterUses ? { limiterUses } : {}),
  };
  if (problems.length > 0) return { problems, ...readable };

  const defaults = AGENT_DEFAULTS;
  const spec: AgentSpec = {
    name: def.name!,
    schedule: def.schedule ? { cron: def.schedule.cron, ...(def.schedule.tz ? { tz: def.schedule.tz } : {}) } : undefined,
    priority: (def.priority ?? defaults.priority) as Priority,
    dependsOn: [...new Set(dependsOn as string[])],
    timeoutMs: def.timeoutMs ?? defaults.timeoutMs,
    retry: {
      attempts: retry.attempts ?? defaults.retry.attempts,
      backoff: { type: 'exponential', delayMs: retry.backoff?.delayMs ?? defaults.retry.backoff.delayMs },
    },
    ...controlsOf(def),
    maxRestartsPerHour: def.maxRestartsPerHour ?? defaults.maxRestartsPerHour,
    shard: def.shard,
    depth: 0,
    source,
    definition: def as AgentDefinition,
  };
  return { spec, problems, ...readable };
}

/** Upper bounds that keep numbers harmless: timers that really wait, counts Redis and Lua hold exactly. */
const MAX_ATTEMPTS = 1000;
const MAX_RESTARTS_PER_HOUR = 1_000_000;

function checkPositiveInt(value: unknown, field: string, problem: (t: string) => void, max: number, unit = '') {
  if (value === undefined) return;
  if (!(Number.isInteger(value) && (value as number) > 0)) problem(`${field} must be a positive integer, got ${describeValue(value)}`);
  else if ((value as number) > max) problem(`${field} must be at most ${max}${unit ? ` ${unit}` : ''}, got ${describeValue(value)}`);
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}
