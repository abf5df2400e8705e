import type { BusEvent } from './bus.js';
import { InvalidInputError } from './errors.js';

/**
 * Which bus events a live stream (`GET /api/events`, `werkpilot events --follow`) passes on:
 * `types` are comma-separated globs where `*` matches anything (`agent:*,circuit:*`), `agents`
 * comma-separated agent names. Either one empty or absent: no restriction on it.
 */
export interface EventFilterSpec {
  types?: string | string[];
  agents?: string | string[];
}

export type EventFilter = (event: BusEvent) => boolean;

const TYPE_GLOB = /^[A-Za-z0-9:*._-]{1,100}$/;
const AGENT_NAME = /^[a-z0-9][a-z0-9-]{0,99}$/;

/** Builds the predicate; throws InvalidInputError naming the bad pattern or name. */
export function createEventFilter(spec: EventFilterSpec = {}): EventFilter {
  const types = listOf(spec.types);
  const agents = listOf(spec.agents);
  for (const t of types) {
    if (!TYPE_GLOB.test(t)) throw new InvalidInputError(`type: "${t}" is not an event type pattern (letters, digits, ":", ".", "_", "-" and "*", e.g. agent:*)`);
  }
  for (const a of agents) {
    if (!AGENT_NAME.test(a)) throw new InvalidInputError(`agent: "${a}" is not an agent name ([a-z0-9][a-z0-9-]*)`);
  }
  const typePatterns = types.map(globToRegExp);
  const agentSet = new Set(agents);
  return (event) =>
    (typePatterns.length === 0 || typePatterns.some((p) => p.test(event.type))) &&
    (agentSet.size === 0 || (event.agent !== undefined && agentSet.has(event.agent)));
}

function listOf(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const parts = (Array.isArray(value) ? value : [value]).flatMap((v) => String(v).split(','));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}
