import type { Context, Span } from '@opentelemetry/api';
import type { Logger } from 'pino';

/**
 * The agent definition: what an agent module's default export describes.
 * See DESIGN.md › Agents; defaults are applied by the registry.
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

/** What `defineAgent` takes. */
export interface AgentDefinition<TData = unknown, TResult = unknown> {
  name: string;
  schedule?: AgentSchedule;
  priority?: Priority;
  dependsOn?: string[];
  timeoutMs?: number;
  retry?: Partial<RetryPolicy> & { backoff?: Partial<RetryPolicy['backoff']> };
  overlap?: 'skip' | 'queue';
  maxRestartsPerHour?: number;
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
  overlap: 'skip' | 'queue';
  maxRestartsPerHour: number;
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
  overlap: 'skip' as const,
  maxRestartsPerHour: 50,
};

/**
 * Declares an agent. The default export of every module in `WERKPILOT_AGENTS` must be one.
 * It returns the definition unchanged: validation happens when the registry loads, so that
 * all problems of all agents are reported together.
 */
export function defineAgent<TData = unknown, TResult = unknown>(
  definition: AgentDefinition<TData, TResult>,
): AgentDefinition<TData, TResult> {
  return definition;
}
