import type { Context, Span } from '@opentelemetry/api';
import type { Logger } from 'pino';

/**
 * The agent definition: what an agent module's default export describes.
 * See docs/design.md#agents (and docs/agents.md); defaults are applied by the registry.
 */
export type Priority = 1 | 2 | 3;

export interface AgentSchedule {
  /** 5- or 6-field cron expression (6 fields: seconds first). */
  cron: string;
  /** IANA time zone; the scheduler's local zone when omitted. */
  tz?: string;
}

export interface RetryPolicy {
  attempts: number;
  backoff: { type: 'exponential'; delayMs: number };
}

/** The logger an agent sees: pino's level methods. Lines also go to the run's job log. */
export type AgentLogger = Pick<Logger, 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'>;

/** Handler for a bus topic an agent subscribed to during a run. */
export type TopicHandler = (payload: unknown, event: { type: string; agent?: string; at: string }) => void;

/** What an agent's `run` receives. */
export interface AgentContext<TData = unknown> {
  /** Aborted on timeout, cancellation or shutdown: stop work promptly when it fires. */
  signal: AbortSignal;
  log: AgentLogger;
  /** The data given to the run (manual trigger or pipeline), `undefined` for cron ticks. */
  data: TData;
  /** 1 for the first attempt, 2 for the first retry, ... */
  attempt: number;
  /** The run's id (its BullMQ job id). */
  runId: string;
  /** This agent's name. */
  agent: string;
  /**
   * This attempt's OpenTelemetry span (`run <agent>`), in the run's trace: add attributes and events
   * to it, or start child spans under `otelContext`. With tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)
   * it is OpenTelemetry's non-recording span, which ignores every call, so agents need no check.
   */
  span: Span;
  /**
   * The OpenTelemetry context with `span` active. It is already the active context while `run`
   * executes, so instrumented clients (HTTP, LLM SDKs) and `tracer.startActiveSpan` join the run's
   * trace by themselves; pass it explicitly where the async context is lost (a callback queued
   * elsewhere): `context.with(ctx.otelContext, fn)`, `propagation.inject(ctx.otelContext, headers)`.
   */
  otelContext: Context;
  /**
   * The tick this run stands for: the cron tick of a scheduled run (also a catch-up or backfilled
   * one), `undefined` for manual and pipeline runs. Key idempotent work by it (one report per tick).
   */
  scheduledAt: Date | undefined;
  /**
   * Takes `cost` tokens (default 1) of the shared limiter `name` (defineLimiter), which this agent
   * lists in `limiters`; resolves once they are granted, waiting for them if the limiter is over
   * budget (its wait ends with `ctx.signal`). For an agent that calls a rate-limited API several
   * times per run. Grants are booked in Redis, exact across all workers.
   */
  limit(name: string, cost?: number): Promise<void>;
  /** Publish a message on the event bus under `topic` (agents' own topics). */
  publish(topic: string, payload?: unknown): Promise<void>;
  /** Ask another agent's `onRequest` for an answer; rejects on error or timeout. */
  request<T = unknown>(agent: string, payload?: unknown, options?: { timeoutMs?: number }): Promise<T>;
  /**
   * Listen to a bus topic for the rest of this run; the subscription ends with the run. The promise
   * resolves once it is live (await it before asking someone to publish); awaiting is optional.
   */
  subscribe(topic: string, handler: TopicHandler): Promise<void>;
}

export interface HealthCheckResult {
  healthy: boolean;
  reason?: string;
}

/**
 * What happens to a run that finds its agent's concurrency limit reached (per key value, when the
 * agent has `concurrency.key`). Named after Temporal's schedule overlap policies; see docs/agents.md.
 *  - `skip`: skipped with reason `overlap` (Temporal's Skip; the default).
 *  - `queue`: waits its turn, every one kept, first come first served (Temporal's BufferAll).
 *  - `bufferOne`: one run waits its turn; runs arriving while one waits are skipped (BufferOne).
 *  - `cancelOther`: the oldest running run is cancelled, and this one starts once it has ended;
 *    one run waits at most, like bufferOne (CancelOther).
 *  - `allowAll`: no limit at all (AllowAll).
 */
export type OverlapPolicy = 'skip' | 'queue' | 'bufferOne' | 'cancelOther' | 'allowAll';

export const OVERLAP_POLICIES: readonly OverlapPolicy[] = ['skip', 'queue', 'bufferOne', 'cancelOther', 'allowAll'];

/** Computes the value a run's limit is counted under (e.g. a tenant id) from its `ctx.data`. */
export type ControlKey<TData = unknown> = (data: TData) => string;

/** At most `limit` runs of the agent at once across all workers, per value of `key(data)` if given. */
export interface ConcurrencyControl<TData = unknown> {
  limit: number;
  key?: ControlKey<TData>;
}

/** At most `max` run starts per `perMs` (any window of that length), per value of `key(data)` if given. */
export interface RateLimit<TData = unknown> {
  max: number;
  perMs: number;
  key?: ControlKey<TData>;
}

/**
 * Ticks missed while no worker ran (the cluster or Redis down), found when the first late tick runs:
 * `latest` — that one run stands for them all (BullMQ's behaviour); `none` — it is skipped too;
 * `{ windowMs }` — every missed tick at most `windowMs` old runs, in tick order, one after another.
 */
export type CatchUpPolicy = 'latest' | 'none' | { windowMs: number };

/** A shared limiter an agent uses: every run start takes `cost` tokens (default 1; 0 = only through `ctx.limit`). */
export type LimiterUse = string | { name: string; cost?: number };

/** What `defineAgent` takes. */
export interface AgentDefinition<TData = unknown, TResult = unknown> {
  name: string;
  schedule?: AgentSchedule;
  priority?: Priority;
  dependsOn?: string[];
  timeoutMs?: number;
  retry?: Partial<RetryPolicy> & { backoff?: Partial<RetryPolicy['backoff']> };
  overlap?: OverlapPolicy;
  /** Default `{ limit: 1 }`: one run at a time (what `overlap` applies to). */
  concurrency?: ConcurrencyControl<TData>;
  rateLimit?: RateLimit<TData>;
  /** Names of shared limiters (defineLimiter) this agent's runs take tokens from. */
  limiters?: LimiterUse[];
  /** Default `latest`. Needs a schedule. */
  catchUp?: CatchUpPolicy;
  maxRestartsPerHour?: number;
  /**
   * Pins the agent's dependency component to this shard when the fleet has several
   * (WERKPILOT_SHARDS; see docs/operations.md#shards). Without a pin a component's shard follows
   * from its name alone, so it never moves when other agents change.
   */
  shard?: number;
  run(ctx: AgentContext<TData>): Promise<TResult> | TResult;
  healthCheck?(ctx: { signal: AbortSignal; log: AgentLogger }): Promise<HealthCheckResult> | HealthCheckResult;
  onRequest?(payload: unknown, ctx: { signal: AbortSignal; log: AgentLogger; agent: string }): Promise<unknown> | unknown;
}

/** An agent with every default applied, as the registry holds it. */
export interface AgentSpec {
  name: string;
  schedule: AgentSchedule | undefined;
  priority: Priority;
  dependsOn: string[];
  timeoutMs: number;
  retry: RetryPolicy;
  overlap: OverlapPolicy;
  concurrency: ConcurrencyControl;
  rateLimit: RateLimit | undefined;
  limiters: { name: string; cost: number }[];
  catchUp: CatchUpPolicy;
  maxRestartsPerHour: number;
  /** The shard pin, if any (`shard` in the definition). */
  shard: number | undefined;
  /** Dependency depth: 0 without dependencies, else 1 + the deepest dependency. */
  depth: number;
  /** The module file the agent came from. */
  source: string;
  definition: AgentDefinition;
}

export const AGENT_DEFAULTS = {
  priority: 3 as Priority,
  timeoutMs: 60_000,
  retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 1000 } } as RetryPolicy,
  overlap: 'skip' as OverlapPolicy,
  concurrencyLimit: 1,
  catchUp: 'latest' as CatchUpPolicy,
  maxRestartsPerHour: 50,
};

/**
 * Declares an agent. The default export of every module in `WERKPILOT_AGENTS` must be one.
 * It returns the definition unchanged: validation happens when the registry loads, so that
 * all problems of all agents are reported together.
 */
export function defineAgent<TData = unknown, TResult = unknown>(definition: AgentDefinition<TData, TResult>): AgentDefinition<TData, TResult> {
  return definition;
}

/** What `defineLimiter` takes: a rate limit several agents share (an API's quota). */
export interface LimiterDefinition {
  /** Unique among limiters, `[a-z0-9][a-z0-9-]*`; agents name it in `limiters` and `ctx.limit`. */
  name: string;
  /** Tokens per `perMs` (any window of that length), across every agent and worker using it. */
  max: number;
  perMs: number;
}

/** A limiter module's default export: the definition, marked so the registry tells it from an agent. */
export type Limiter = LimiterDefinition & { readonly kind: 'limiter' };

/**
 * Declares a shared limiter. Put it in a module of the agents directory (its default export), next
 * to the agents; they list it in `limiters`. Validated with the registry, like agents.
 */
export function defineLimiter(definition: LimiterDefinition): Limiter {
  return { ...definition, kind: 'limiter' };
}
