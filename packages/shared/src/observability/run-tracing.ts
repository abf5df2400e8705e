import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, context, propagation, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import type { Job } from 'bullmq';
import type { AgentSpec } from '../agents/agent.js';
import type { RunResult } from '../run/agent-executor.js';
import { cronTickOf } from '../run/dependency-waits.js';
import type { RunJobData } from '../queues/queues.js';

/**
 * Our spans of a run's life, beside BullMQ's own (bullmq-otel: `add`/`addBulk` when a run is
 * enqueued, `process` for each attempt a worker takes):
 *
 *   trigger <agent> | pipeline <agent>     scheduler: the API call that queued the run(s)
 *     addBulk agents                       BullMQ: the enqueue; its context rides in each job's options
 *       wait for dependencies <agent>      from the run's due time to its gate (runs of a pipeline or tick)
 *       process agents                     BullMQ: one attempt on a worker
 *         run <agent>                      the attempt: run id, agent, attempt, pipeline id, outcome
 *           gate <agent>                   admission: gate, dependency runs, circuit, overlap lease
 *           ...                            the agent's own spans (`ctx.span`, instrumented clients)
 *
 * A pipeline is one trace: every run carries the trigger's context. A cron run has no trigger: each
 * attempt's `process` span starts a trace of its own. The run's trace id is on its result, its job
 * (`GET /api/runs/:id`), its events and the agent's log lines (ctx.log); the run id is on the
 * spans, so either finds the other. Nothing here is built when tracing is off: the executor then
 * never calls it.
 */

/** The attributes our spans carry (searchable in Jaeger or Tempo: `werkpilot.run.id=42`). */
export const SPAN_ATTRIBUTES = {
  runId: 'werkpilot.run.id',
  runIds: 'werkpilot.run.ids',
  agent: 'werkpilot.agent',
  attempt: 'werkpilot.run.attempt',
  trigger: 'werkpilot.run.trigger',
  pipelineId: 'werkpilot.pipeline.id',
  priority: 'werkpilot.agent.priority',
  workerId: 'werkpilot.worker.id',
  outcome: 'werkpilot.run.outcome',
  reasons: 'werkpilot.run.skip_reasons',
  decision: 'werkpilot.gate.decision',
} as const;

/**
 * How an attempt ended, on its `run` span: the run's outcomes, plus `waiting` (parked until its
 * dependency runs or its agent's turn) and `returned` (handed back to the queue without spending an
 * attempt: shutdown, memory shedding, a lost lock).
 */
export type AttemptOutcome = 'success' | 'failure' | 'skipped' | 'cancelled' | 'waiting' | 'returned';

/** One attempt's span, as the executor sees it. */
export interface RunTrace {
  /** The attempt's `run <agent>` span: `ctx.span`. */
  readonly span: Span;
  /** The context with that span active: `ctx.otelContext`. */
  readonly context: Context;
  /** The run's trace id when the trace is sampled (exported); undefined when the sampler dropped it, so no one looks for it. */
  readonly traceId: string | undefined;
  /** The gate (admission) starts now. */
  gateStarted(): void;
  /** The gate let the run start, or skipped it for `reasons`. */
  gated(decision: 'run' | 'skip', reasons?: readonly string[]): void;
}

export interface RunTracer {
  /**
   * Runs one attempt of `job` inside its `run <agent>` span (a child of BullMQ's `process` span,
   * the active context), ends the span with the attempt's outcome and puts the trace id on the result.
   */
  trace(spec: AgentSpec, job: Job<RunJobData>, attempt: number, body: (trace: RunTrace) => Promise<RunResult>): Promise<RunResult>;
}

export function createRunTracer({ tracer, workerId, clock = Date.now }: { tracer: Tracer; workerId: string; clock?: () => number }): RunTracer {
  return {
    async trace(spec, job, attempt, body) {
      const parent = context.active();
      const span = tracer.startSpan(
        `run ${spec.name}`,
        {
          kind: SpanKind.INTERNAL,
          attributes: {
            [SPAN_ATTRIBUTES.runId]: job.id!,
            [SPAN_ATTRIBUTES.agent]: spec.name,
            [SPAN_ATTRIBUTES.attempt]: attempt,
            [SPAN_ATTRIBUTES.trigger]: job.data.trigger,
            [SPAN_ATTRIBUTES.priority]: spec.priority,
            [SPAN_ATTRIBUTES.workerId]: workerId,
            ...(job.data.pipelineId ? { [SPAN_ATTRIBUTES.pipelineId]: job.data.pipelineId } : {}),
          },
        },
        parent,
      );
      const attemptTrace = new AttemptTrace(tracer, span, parent, spec, job, clock);
      try {
        const result = await context.with(attemptTrace.context, () => body(attemptTrace));
        span.setAttribute(SPAN_ATTRIBUTES.outcome, result.outcome);
        if (result.outcome === 'skipped') span.setAttribute(SPAN_ATTRIBUTES.reasons, result.reasons);
        if (attemptTrace.traceId) result.traceId = attemptTrace.traceId;
        return result;
      } catch (err) {
        const outcome = attemptOutcomeOf(err);
        if (outcome === 'waiting') attemptTrace.gated('wait');
        span.setAttribute(SPAN_ATTRIBUTES.outcome, outcome);
        if (outcome === 'failure') {
          span.recordException(err instanceof Error ? err : String(err));
          span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
        }
        throw err;
      } finally {
        span.end();
      }
    },
  };
}

class AttemptTrace implements RunTrace {
  readonly context: Context;
  readonly traceId: string | undefined;
  private gateStartedAt: number | undefined;

  constructor(
    private readonly tracer: Tracer,
    readonly span: Span,
    /** BullMQ's `process` span's context. */
    private readonly processContext: Context,
    private readonly spec: AgentSpec,
    private readonly job: Job<RunJobData>,
    private readonly clock: () => number,
  ) {
    this.context = trace.setSpan(processContext, span);
    const { traceId, traceFlags } = span.spanContext();
    this.traceId = traceFlags & TraceFlags.SAMPLED ? traceId : undefined;
  }

  gateStarted(): void {
    this.gateStartedAt = this.clock();
  }

  gated(decision: 'run' | 'skip' | 'wait', reasons?: readonly string[]): void {
    // Epoch milliseconds as Dates: a bare number older than the process would be read as performance time.
    const startedAt = this.gateStartedAt;
    if (startedAt === undefined) return;
    this.gateStartedAt = undefined;
    if (decision !== 'wait') this.recordWait(startedAt);
    const gate = this.tracer.startSpan(
      `gate ${this.spec.name}`,
      { kind: SpanKind.INTERNAL, startTime: new Date(startedAt), attributes: { [SPAN_ATTRIBUTES.decision]: decision, ...(reasons ? { [SPAN_ATTRIBUTES.reasons]: [...reasons] } : {}) } },
      this.context,
    );
    gate.end();
  }

  /**
   * A run of a pipeline or tick whose agent has dependencies waited for their runs, from when it was
   * due (the pipeline's enqueue, or the tick) to its gate: one span for the whole wait, whichever
   * attempts parked meanwhile. In a pipeline it hangs under the enqueue, beside the `process` spans.
   */
  private recordWait(until: number): void {
    if (this.spec.dependsOn.length === 0) return;
    const { job } = this;
    const tick = cronTickOf(job.id);
    const dueAt = tick ?? (job.data.pipelineId ? job.timestamp : undefined);
    if (dueAt === undefined) return;
    const metadata = job.opts.telemetry?.metadata;
    const parent = metadata ? (enqueueContext(metadata) ?? this.processContext) : this.processContext;
    const wait = this.tracer.startSpan(
      `wait for dependencies ${this.spec.name}`,
      { kind: SpanKind.INTERNAL, startTime: new Date(Math.min(dueAt, until)), attributes: { [SPAN_ATTRIBUTES.runId]: job.id!, [SPAN_ATTRIBUTES.agent]: this.spec.name } },
      parent,
    );
    wait.end(new Date(until));
  }
}

/** The context of the span that enqueued a job, from the propagation metadata BullMQ keeps in its options. */
function enqueueContext(metadata: string): Context | undefined {
  try {
    return propagation.extract(ROOT_CONTEXT, JSON.parse(metadata) as Record<string, string>);
  } catch {
    return undefined;
  }
}

function attemptOutcomeOf(err: unknown): AttemptOutcome {
  const name = err instanceof Error ? err.name : '';
  // BullMQ's own control errors, matched by name as BullMQ itself does.
  if (name === 'DelayedError') return 'waiting';
  if (name === 'WaitingError') return 'returned';
  return 'failure';
}

/** The W3C trace context a caller sent (the `traceparent` and `tracestate` headers). */
export interface TraceParent {
  traceparent: string;
  tracestate?: string;
}

export interface TriggerTracer {
  /**
   * Runs `enqueue` inside a `trigger <agent>` (or `pipeline <agent>`) span, so BullMQ's enqueue
   * span and every run's spans join its trace; a child of the caller's trace when `parent` is given.
   */
  trace<T extends { runId: string; pipelineId?: string; runs?: { runId: string }[] }>(
    agent: string,
    options: { isPipeline: boolean; parent?: TraceParent | undefined },
    enqueue: () => Promise<T>,
  ): Promise<T>;
}

export function createTriggerTracer(tracer: Tracer): TriggerTracer {
  return {
    async trace(agent, { isPipeline, parent }, enqueue) {
      const parentContext = parent ? propagation.extract(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
      const span = tracer.startSpan(
        `${isPipeline ? 'pipeline' : 'trigger'} ${agent}`,
        { kind: SpanKind.INTERNAL, attributes: { [SPAN_ATTRIBUTES.agent]: agent, [SPAN_ATTRIBUTES.trigger]: 'manual' } },
        parentContext,
      );
      try {
        const queued = await context.with(trace.setSpan(parentContext, span), enqueue);
        span.setAttribute(SPAN_ATTRIBUTES.runId, queued.runId);
        if (queued.pipelineId) span.setAttribute(SPAN_ATTRIBUTES.pipelineId, queued.pipelineId);
        if (queued.runs)
          span.setAttribute(
            SPAN_ATTRIBUTES.runIds,
            queued.runs.map((run) => run.runId),
          );
        return queued;
      } catch (err) {
        span.recordException(err instanceof Error ? err : String(err));
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
        throw err;
      } finally {
        span.end();
      }
    },
  };
}

/** The trace id a job's propagation metadata names (its enqueue's trace) when that trace is sampled, or undefined. */
export function traceIdOfMetadata(metadata: string | undefined): string | undefined {
  if (!metadata) return undefined;
  try {
    const { traceparent } = JSON.parse(metadata) as { traceparent?: unknown };
    const match = typeof traceparent === 'string' ? /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/.exec(traceparent) : null;
    const isSampled = match !== null && (parseInt(match[2]!, 16) & TraceFlags.SAMPLED) !== 0;
    return isSampled && match[1] !== '0'.repeat(32) ? match[1] : undefined;
  } catch {
    return undefined;
  }
}
