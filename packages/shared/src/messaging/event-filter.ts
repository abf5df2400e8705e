import type { BusEvent } from './bus.js';
import { InvalidInputError } from '../process/errors.js';
import { compileGlob } from './glob.js';

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

/**
 * Filters come from anonymous clients: each pattern and name is bounded, and so is how many a
 * filter may hold, so building and applying one costs little whatever is sent.
 */
export const EVENT_FILTER_LIMITS = { patternLength: 100, types: 20, agents: 100 } as const;

const TYPE_GLOB = /^[A-Za-z0-9:*._-]+$/;
const AGENT_NAME = /^[a-z0-9][a-z0-9-]*$/;

/** Builds the predicate; throws InvalidInputError naming the bad pattern or name. */
export function createEventFilter(spec: EventFilterSpec = {}): EventFilter {
  const types = listOf(spec.types, 'type', EVENT_FILTER_LIMITS.types);
  const agents = listOf(spec.agents, 'agent', EVENT_FILTER_LIMITS.agents);
  for (const t of types) {
    if (!TYPE_GLOB.test(t)) throw new InvalidInputError(`type: ${quote(t)} is not an event type pattern (letters, digits, ":", ".", "_", "-" and "*", e.g. agent:*)`);
  }
  for (const a of agents) {
    if (!AGENT_NAME.test(a)) throw new InvalidInputError(`agent: ${quote(a)} is not an agent name ([a-z0-9][a-z0-9-]*)`);
  }
  const typePatterns = types.map(compileGlob);
  const agentSet = new Set(agents);
  return (event) => (typePatterns.length === 0 || typePatterns.some((p) => p.matches(event.type))) && (agentSet.size === 0 || (event.agent !== undefined && agentSet.has(event.agent)));
}

function listOf(value: string | string[] | undefined, what: string, maxItems: number): string[] {
  if (value === undefined) return [];
  const given = Array.isArray(value) ? value : [value];
  // Checked before splitting, so a huge value is refused without building a huge list.
  const maxLength = maxItems * (EVENT_FILTER_LIMITS.patternLength + 1);
  if (given.length > maxItems || given.some((v) => String(v).length > maxLength)) {
    throw new InvalidInputError(`${what}: at most ${maxItems} values of at most ${EVENT_FILTER_LIMITS.patternLength} characters each`);
  }
  const parts = given
    .flatMap((v) => String(v).split(','))
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (parts.length > maxItems) throw new InvalidInputError(`${what}: at most ${maxItems} values, got ${parts.length}`);
  const long = parts.find((p) => p.length > EVENT_FILTER_LIMITS.patternLength);
  if (long !== undefined) {
    throw new InvalidInputError(`${what}: ${quote(long)} is longer than ${EVENT_FILTER_LIMITS.patternLength} characters`);
  }
  return parts;
}

/** The value for an error message: quoted, and cut short so a huge input is not echoed back. */
function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}
