import { AGENT_DEFAULTS, OVERLAP_POLICIES, type AgentDefinition, type AgentSpec, type CatchUpPolicy, type LimiterDefinition } from './agent.js';
import { MAX_TIMER_MS } from '../run/size-limits.js';
import { describeValue } from './value-description.js';

/**
 * Validation of the fleet controls an agent declares (`concurrency`, `overlap`, `rateLimit`,
 * `limiters`, `catchUp`) and of shared limiters (`defineLimiter`), for the registry: each problem
 * names the field, what was given and what is allowed, and all of them are reported together.
 */

/** Upper bounds that keep the figures meaningful and Redis's structures small. */
export const MAX_CONCURRENCY_LIMIT = 10_000;
export const MAX_RATE_LIMIT_MAX = 1_000_000;
/** A catch-up window longer than a year would replay more ticks than anyone means to. */
export const MAX_CATCH_UP_WINDOW_MS = 366 * 86_400_000;

const LIMITER_NAME = /^[a-z0-9][a-z0-9-]*$/;

type Problem = (text: string) => void;

/** One limiter an agent lists, as read (its name is checked against the defined limiters later). */
export interface LimiterUseRead {
  name: string;
  cost: number;
}

/**
 * Checks the controls of one agent definition, reporting through `problem`. Returns the limiters it
 * lists when that list could be read (for the registry to check against the defined limiters).
 */
export function checkControls(def: Partial<AgentDefinition> & Record<string, unknown>, problem: Problem): LimiterUseRead[] | undefined {
  if (def.overlap !== undefined && !OVERLAP_POLICIES.includes(def.overlap as never)) {
    problem(`overlap must be one of ${OVERLAP_POLICIES.map((p) => `"${p}"`).join(', ')}, got ${describeValue(def.overlap)}`);
  }
  if (def.concurrency !== undefined) {
    const c = def.concurrency as unknown;
    if (!isPlainObject(c)) problem('concurrency must be { limit, key? }');
    else {
      unknownFields(c, ['limit', 'key'], 'concurrency', problem);
      checkCount(c.limit, 'concurrency.limit', MAX_CONCURRENCY_LIMIT, problem, true);
      checkKey(c.key, 'concurrency.key', problem);
      if (def.overlap === 'allowAll') problem('overlap "allowAll" sets no limit, so concurrency has nothing to limit: remove one of them');
    }
  }
  if (def.rateLimit !== undefined) {
    const r = def.rateLimit as unknown;
    if (!isPlainObject(r)) problem('rateLimit must be { max, perMs, key? }');
    else {
      unknownFields(r, ['max', 'perMs', 'key'], 'rateLimit', problem);
      checkCount(r.max, 'rateLimit.max', MAX_RATE_LIMIT_MAX, problem, true);
      checkCount(r.perMs, 'rateLimit.perMs', MAX_TIMER_MS, problem, true, 'ms');
      checkKey(r.key, 'rateLimit.key', problem);
    }
  }
  let uses: LimiterUseRead[] | undefined;
  if (def.limiters !== undefined) {
    if (!Array.isArray(def.limiters)) problem(`limiters must be an array of limiter names (or { name, cost }), got ${describeValue(def.limiters)}`);
    else {
      uses = [];
      for (const [i, use] of (def.limiters as unknown[]).entries()) {
        const field = `limiters[${i}]`;
        if (typeof use === 'string') {
          uses.push({ name: use, cost: 1 });
        } else if (isPlainObject(use) && typeof use.name === 'string') {
          unknownFields(use, ['name', 'cost'], field, problem);
          if (use.cost !== undefined && !(Number.isInteger(use.cost) && (use.cost as number) >= 0)) {
            problem(`${field}.cost must be a whole number of tokens (0: only through ctx.limit), got ${describeValue(use.cost)}`);
          } else uses.push({ name: use.name, cost: (use.cost as number | undefined) ?? 1 });
        } else {
          problem(`${field} must be a limiter name or { name, cost }, got ${describeValue(use)}`);
        }
      }
      const names = uses.map((u) => u.name);
      for (const name of new Set(names.filter((n, i) => names.indexOf(n) !== i))) problem(`limiters lists "${name}" more than once`);
    }
  }
  if (def.catchUp !== undefined) {
    const c = def.catchUp as unknown;
    if (isPlainObject(c)) {
      unknownFields(c, ['windowMs'], 'catchUp', problem);
      checkCount(c.windowMs, 'catchUp.windowMs', MAX_CATCH_UP_WINDOW_MS, problem, true, 'ms');
    } else if (c !== 'latest' && c !== 'none') {
      problem(`catchUp must be "latest", "none" or { windowMs }, got ${describeValue(c)}`);
    }
    if (def.schedule === undefined) problem('catchUp applies to scheduled runs: add a schedule or remove catchUp');
  }
  return uses;
}

/** The controls of a definition that passed checkControls, with the defaults applied. */
export function controlsOf(def: Partial<AgentDefinition>): Pick<AgentSpec, 'overlap' | 'concurrency' | 'rateLimit' | 'limiters' | 'catchUp'> {
  const concurrency = def.concurrency as AgentSpec['concurrency'] | undefined;
  const rateLimit = def.rateLimit as AgentSpec['rateLimit'] | undefined;
  return {
    overlap: def.overlap ?? AGENT_DEFAULTS.overlap,
    concurrency: { limit: concurrency?.limit ?? AGENT_DEFAULTS.concurrencyLimit, ...(concurrency?.key ? { key: concurrency.key } : {}) },
    rateLimit: rateLimit ? { max: rateLimit.max, perMs: rateLimit.perMs, ...(rateLimit.key ? { key: rateLimit.key } : {}) } : undefined,
    limiters: (def.limiters ?? []).map((use) => (typeof use === 'string' ? { name: use, cost: 1 } : { name: use.name, cost: use.cost ?? 1 })),
    catchUp: copyCatchUp(def.catchUp ?? AGENT_DEFAULTS.catchUp),
  };
}

function copyCatchUp(policy: CatchUpPolicy): CatchUpPolicy {
  return typeof policy === 'string' ? policy : { windowMs: policy.windowMs };
}

/** Checks a limiter module's default export. */
export function checkLimiter(raw: Record<string, unknown>, where: string): { limiter?: LimiterDefinition; problems: string[] } {
  const problems: string[] = [];
  const label = typeof raw.name === 'string' ? `limiter "${raw.name}" (${where})` : where;
  const problem = (text: string) => problems.push(`${label}: ${text}`);
  if (typeof raw.name !== 'string' || !LIMITER_NAME.test(raw.name)) problem(`name must match [a-z0-9][a-z0-9-]*, got ${describeValue(raw.name)}`);
  unknownFields(raw, ['name', 'max', 'perMs', 'kind'], 'defineLimiter', problem);
  checkCount(raw.max, 'max', MAX_RATE_LIMIT_MAX, problem, true);
  checkCount(raw.perMs, 'perMs', MAX_TIMER_MS, problem, true, 'ms');
  if (problems.length > 0) return { problems };
  return { limiter: { name: raw.name as string, max: raw.max as number, perMs: raw.perMs as number }, problems };
}

/** Problems of the limiters agents list, against the defined ones: unknown names, costs no budget can grant. */
export function checkLimiterUses(agent: string, uses: readonly LimiterUseRead[], limiters: ReadonlyMap<string, LimiterDefinition>): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const { name, cost } of uses) {
    if (seen.has(name)) continue;
    seen.add(name);
    const limiter = limiters.get(name);
    if (!limiter) problems.push(`${agent}: limiters names unknown limiter "${name}"; define it with defineLimiter({ name: '${name}', max, perMs }) in the agents directory`);
    else if (cost > limiter.max) problems.push(`${agent}: limiters takes ${cost} tokens of "${name}" per run, more than its max of ${limiter.max}: no run could ever start`);
  }
  return problems;
}

function checkCount(value: unknown, field: string, max: number, problem: Problem, required: boolean, unit = ''): void {
  if (value === undefined) {
    if (required) problem(`${field} is required`);
    return;
  }
  if (!(Number.isInteger(value) && (value as number) > 0)) problem(`${field} must be a positive integer${unit ? ` (${unit})` : ''}, got ${describeValue(value)}`);
  else if ((value as number) > max) problem(`${field} must be at most ${max}${unit ? ` ${unit}` : ''}, got ${describeValue(value)}`);
}

function checkKey(value: unknown, field: string, problem: Problem): void {
  if (value !== undefined && typeof value !== 'function') problem(`${field} must be a function (data) => string, got ${describeValue(value)}`);
}

function unknownFields(value: Record<string, unknown>, known: readonly string[], field: string, problem: Problem): void {
  for (const name of Object.keys(value)) {
    if (!known.includes(name)) problem(`${field} has no field "${name}" (known: ${known.filter((k) => k !== 'kind').join(', ')})`);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
