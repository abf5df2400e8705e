import type { ChainableCommander, Redis } from 'ioredis';
import type { AgentSpec, CatchUpPolicy, LimiterDefinition, OverlapPolicy } from '../agents/agent.js';
import { slotGroupOf } from '../run/concurrency-slots.js';
import { type Keys, limiterKey, pausedSchedulesSet, rateWaitingKey } from '../redis/keys.js';
import { escapeLabelValue } from '../observability/cluster-exposition.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import type { Registry } from '../agents/registry.js';

/**
 * What an operator sees of the fleet controls, wherever they look (`/api/agents/:name`, the
 * overview page, `werkpilot agents`, Prometheus): each agent's limits as configured, and how they
 * stand now — slots in use, runs waiting for a slot or for tokens, runs delayed by rate limits so
 * far, whether its schedule is paused — and each shared limiter's tokens in its window.
 *
 * These figures move at admission, not only when a run ends, so the cluster snapshot reads them
 * afresh on every build (the `controls` section of `/api/metrics`, and their Prometheus families)
 * rather than through its per-agent change feed: live figures only for agents that use a control
 * beyond the default (one run at a time, `skip`) — a large fleet of plain agents costs a build
 * nothing more — and the set of paused schedules in one command.
 */

/** An agent's controls as configured. */
export interface ControlsConfig {
  overlap: OverlapPolicy;
  /** Null under `allowAll` (no limit). */
  concurrency: { limit: number; keyed: boolean } | null;
  rateLimit: { max: number; perMs: number; keyed: boolean } | null;
  limiters: { name: string; cost: number; max: number | null; perMs: number | null }[];
  /** Null for an agent without a schedule. */
  catchUp: CatchUpPolicy | null;
}

/** How an agent's controls stand now. Live counts are absent for an agent with the default controls. */
export interface ControlsState {
  schedulePaused?: boolean;
  /** Runs holding one of its concurrency slots (under any key value). */
  running?: number;
  /** Runs parked until a slot is theirs. */
  waiting?: number;
  /** Runs parked until their rate-limit tokens are due. */
  waitingForTokens?: number;
  /** Runs delayed by a rate limit since the agent first ran (a counter). */
  rateLimited?: number;
}

export type AgentControlsView = ControlsConfig & ControlsState;

/** Tokens granted or booked in a shared limiter's current window. */
export interface LimiterView {
  max: number;
  perMs: number;
  inWindow: number;
}

export function describeControls(spec: AgentSpec, limiters: ReadonlyMap<string, LimiterDefinition> = new Map()): ControlsConfig {
  return {
    overlap: spec.overlap,
    concurrency: spec.overlap === 'allowAll' ? null : { limit: spec.concurrency.limit, keyed: spec.concurrency.key !== undefined },
    rateLimit: spec.rateLimit ? { max: spec.rateLimit.max, perMs: spec.rateLimit.perMs, keyed: spec.rateLimit.key !== undefined } : null,
    limiters: spec.limiters.map((use) => ({ name: use.name, cost: use.cost, max: limiters.get(use.name)?.max ?? null, perMs: limiters.get(use.name)?.perMs ?? null })),
    catchUp: spec.schedule ? spec.catchUp : null,
  };
}

/** Whether an agent uses a control beyond the default (one run at a time, `skip`), so its live figures are read. */
export function hasLiveControls(spec: AgentSpec): boolean {
  return (
    spec.concurrency.limit > 1 || spec.concurrency.key !== undefined || (spec.overlap !== 'skip' && spec.overlap !== 'allowAll') || spec.rateLimit !== undefined || spec.limiters.length > 0
  );
}

/** While a parked run is counted as waiting for tokens past their time (it is being promoted). */
const TOKEN_WAIT_GRACE_MS = 60_000;

/** Queues one command on a pipeline and hands its reply over once the pipeline has run. */
export type PipelineReader = (queue: (pipeline: ChainableCommander) => void, use: (reply: unknown) => void) => void;

/** Everything the controls show, read at one instant. */
export interface ControlsFigures {
  agents: Record<string, AgentControlsView>;
  limiters: Record<string, LimiterView>;
}

/**
 * Queues the reads of the live figures on `read` (one pipeline, shared with the rest of a build);
 * the returned function gives every agent's controls (configured and live) once it has run.
 */
export function readControls(read: PipelineReader, { keys, registry, now }: { keys: Keys; registry: Registry; now: number }): () => ControlsFigures {
  const live = new Map<string, ControlsState>();
  const limiters: Record<string, LimiterView> = {};
  let paused = new Set<string>();
  // Few agents are paused: the set is read whole rather than asked about every scheduled agent.
  read(
    (p) => p.smembers(pausedSchedulesSet(keys)),
    (r) => (paused = new Set(r as string[])),
  );
  const set = (agent: string, field: keyof ControlsState, value: number) => live.set(agent, { ...live.get(agent), [field]: value });
  for (const spec of registry.list()) {
    if (!hasLiveControls(spec)) continue;
    const name = spec.name;
    if (spec.overlap !== 'allowAll') {
      if (spec.concurrency.key) {
        // Keyed: the per-agent indexes across key values, scored by when an entry expires.
        const group = slotGroupOf(keys, spec, '-');
        read(
          (p) => p.zcount(group.index!.running, now, '+inf'),
          (r) => set(name, 'running', Number(r)),
        );
        read(
          (p) => p.zcount(group.index!.waiting, now, '+inf'),
          (r) => set(name, 'waiting', Number(r)),
        );
      } else {
        const group = slotGroupOf(keys, spec);
        if (group.mode === 'lease')
          read(
            (p) => p.exists(group.holders),
            (r) => set(name, 'running', Number(r)),
          );
        else
          read(
            (p) => p.zcount(group.holders, now, '+inf'),
            (r) => set(name, 'running', Number(r)),
          );
        read(
          (p) => p.llen(group.waiters),
          (r) => set(name, 'waiting', Number(r)),
        );
      }
    }
    if (spec.rateLimit || spec.limiters.some((use) => use.cost > 0)) {
      read(
        (p) => p.zcount(rateWaitingKey(keys, name), now - TOKEN_WAIT_GRACE_MS, '+inf'),
        (r) => set(name, 'waitingForTokens', Number(r)),
      );
      read(
        (p) => p.hget(keys.agentStats(name), 'rateLimited'),
        (r) => set(name, 'rateLimited', Number(r ?? 0)),
      );
    }
  }
  for (const limiter of registry.limiters.values()) {
    read(
      (p) => p.zcount(limiterKey(keys, limiter.name), `(${now - limiter.perMs}`, '+inf'),
      (r) => (limiters[limiter.name] = { max: limiter.max, perMs: limiter.perMs, inWindow: Number(r) }),
    );
  }
  return () => {
    const agents: Record<string, AgentControlsView> = {};
    for (const spec of registry.list()) {
      agents[spec.name] = { ...describeControls(spec, registry.limiters), ...(spec.schedule ? { schedulePaused: paused.has(spec.name) } : {}), ...live.get(spec.name) };
    }
    return { agents, limiters };
  };
}

/** Reads the controls on a pipeline of their own (one round trip). */
export async function readControlsNow({ redis, keys, registry, clock = Date.now }: { redis: Redis; keys: Keys; registry: Registry; clock?: () => number }): Promise<ControlsFigures> {
  const pipeline = redis.pipeline();
  const consumers: ((reply: unknown) => void)[] = [];
  const result = readControls(
    (queue, use) => {
      queue(pipeline);
      consumers.push(use);
    },
    { keys, registry, now: clock() },
  );
  for (const [i, reply] of (await execOrThrow(pipeline)).entries()) consumers[i]!(reply);
  return result();
}

/** The controls' Prometheus families, written from the figures of one build. */
export function controlsExposition(figures: ControlsFigures): string {
  const agents = Object.entries(figures.agents);
  const label = (agent: string) => `agent="${escapeLabelValue(agent)}"`;
  let text = header('werkpilot_agent_concurrency_limit', 'gauge', 'Runs of the agent allowed at once (per key value for a keyed agent); absent under overlap allowAll');
  for (const [agent, c] of agents) if (c.concurrency) text += `werkpilot_agent_concurrency_limit{${label(agent)}} ${c.concurrency.limit}\n`;
  text += header('werkpilot_agent_slots_in_use', 'gauge', 'Runs holding a concurrency slot of the agent now (agents with controls beyond the default)');
  for (const [agent, c] of agents) if (c.running !== undefined) text += `werkpilot_agent_slots_in_use{${label(agent)}} ${c.running}\n`;
  text += header('werkpilot_agent_waiting_runs', 'gauge', 'Runs parked until a concurrency slot (slot) or their rate-limit tokens (tokens) are theirs');
  for (const [agent, c] of agents) {
    if (c.waiting !== undefined) text += `werkpilot_agent_waiting_runs{${label(agent)},waiting_for="slot"} ${c.waiting}\n`;
    if (c.waitingForTokens !== undefined) text += `werkpilot_agent_waiting_runs{${label(agent)},waiting_for="tokens"} ${c.waitingForTokens}\n`;
  }
  text += header('werkpilot_agent_rate_limited_total', 'counter', 'Runs delayed until their rate-limit tokens were due, cluster-wide');
  for (const [agent, c] of agents) if (c.rateLimited !== undefined) text += `werkpilot_agent_rate_limited_total{${label(agent)}} ${c.rateLimited}\n`;
  text += header('werkpilot_agent_schedule_paused', 'gauge', 'Whether the schedule of a scheduled agent is paused (1) or running (0)');
  for (const [agent, c] of agents) if (c.schedulePaused !== undefined) text += `werkpilot_agent_schedule_paused{${label(agent)}} ${c.schedulePaused ? 1 : 0}\n`;
  const limiters = Object.entries(figures.limiters);
  text += header('werkpilot_limiter_tokens_in_window', 'gauge', 'Tokens of a shared limiter granted or booked in its current window');
  for (const [limiter, l] of limiters) text += `werkpilot_limiter_tokens_in_window{limiter="${escapeLabelValue(limiter)}"} ${l.inWindow}\n`;
  text += header('werkpilot_limiter_max_tokens', 'gauge', 'Tokens a shared limiter grants per window');
  for (const [limiter, l] of limiters) text += `werkpilot_limiter_max_tokens{limiter="${escapeLabelValue(limiter)}"} ${l.max}\n`;
  return text;
}

function header(name: string, type: string, help: string): string {
  return `\n# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
}
