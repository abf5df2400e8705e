import type { Redis } from 'ioredis';
import { dependencyRule, type GateRule } from '../run/gating.js';
import { skipReason } from '../run/skip-reasons.js';
import { disabledSet, type Keys } from '../redis/keys.js';

/**
 * The operator's enabled/disabled flag per agent, cluster-wide: one Redis set of disabled agents
 * (absent = enabled, so a new agent starts enabled). A disabled agent's own runs are skipped with
 * reason `disabled`; its dependents' runs with `dependency X disabled`. Its cron ticks keep coming
 * (and are skipped), so enabling it again needs no reconcile.
 */
export interface ToggleDeps {
  redis: Redis;
  keys: Keys;
}

/**
 * Disables `agent`. Idempotent; returns whether it was enabled before. The caller checks the name
 * exists. The gate epoch moves with the flag (one MULTI), so every worker's cached gate sees it on
 * its next run.
 */
export async function disableAgent({ redis, keys }: ToggleDeps, agent: string): Promise<boolean> {
  const [[, added]] = (await redis.multi().sadd(disabledSet(keys), agent).incr(keys.gateEpoch).exec()) as [[Error | null, number], unknown];
  return added === 1;
}

/** Enables `agent`. Idempotent; returns whether it was disabled before. */
export async function enableAgent({ redis, keys }: ToggleDeps, agent: string): Promise<boolean> {
  const [[, removed]] = (await redis.multi().srem(disabledSet(keys), agent).incr(keys.gateEpoch).exec()) as [[Error | null, number], unknown];
  return removed === 1;
}

export async function isEnabled({ redis, keys }: ToggleDeps, agent: string): Promise<boolean> {
  return (await redis.sismember(disabledSet(keys), agent)) === 0;
}

/** The disabled ones among `agents`, in one round trip. */
export async function disabledAmong({ redis, keys }: ToggleDeps, agents: readonly string[]): Promise<Set<string>> {
  if (agents.length === 0) return new Set();
  const flags = await redis.smismember(disabledSet(keys), ...agents);
  return new Set(agents.filter((_, i) => flags[i] === 1));
}

const DISABLED = skipReason('disabled');

/** Gate rules: the agent itself disabled ⇒ `disabled`; a dependency disabled ⇒ `dependency X disabled`. */
export function agentToggleRules(): GateRule[] {
  return [({ spec, view }) => (view.of(spec.name).isDisabled ? DISABLED : null), dependencyRule((dep, { view }) => (view.of(dep).isDisabled ? 'disabled' : null))];
}
