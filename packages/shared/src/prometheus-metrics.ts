import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OutcomeListener } from './agent-executor.js';
import { RUN_DURATION_BUCKETS_SECONDS, type RunRecord } from './agent-state.js';

/**
 * Prometheus exposition: the worker's own, process-local figures and the process metrics of both
 * apps (the scheduler's cluster-wide figures are written by cluster-exposition.ts). Each process
 * builds its own prom-client Registry; nothing is registered on prom-client's global default
 * registry, so two apps in one process (tests) never collide.
 */


/** The outcome label of `werkpilot_agent_runs_total`; the values are mutually exclusive. */
export const EXPORTED_OUTCOMES = ['success', 'failure', 'skipped', 'timeout', 'cancelled'] as const;
export type ExportedOutcome = (typeof EXPORTED_OUTCOMES)[number];

/** Media types a Prometheus scraper asks for; anything else gets the JSON snapshot. */
const PROMETHEUS_MEDIA_TYPES = ['text/plain', 'application/openmetrics-text'];

/**
 * Whether a `/metrics` request wants the Prometheus text format: `?format=prometheus`, or an
 * `Accept` header naming text/plain or application/openmetrics-text (Prometheus always sends
 * one). Plain `curl` (`*\/*`), browsers and `application/json` get the JSON snapshot.
 */
export function wantsPrometheusFormat(accept: string | undefined, format: unknown): boolean {
  if (format === 'prometheus') return true;
  if (format === 'json') return false;
  if (!accept) return false;
  return accept
    .toLowerCase()
    .split(',')
    .some((part) => {
      const [type = '', ...params] = part.split(';').map((s) => s.trim());
      const q = params.find((p) => p.startsWith('q='));
      return PROMETHEUS_MEDIA_TYPES.includes(type) && (q === undefined || Number(q.slice(2)) > 0);
    });
}

/** How a run record counts in `werkpilot_agent_runs_total`. */
export function exportedOutcomeOf(record: RunRecord): ExportedOutcome {
  if (record.timedOut) return 'timeout';
  return record.outcome;
}

/**
 * The scheduler's own process metrics (CPU, memory, heap, event-loop lag, GC) in the exposition
 * format; its cluster-wide figures come from the snapshot (cluster-exposition.ts), rendered once
 * per build.
 */
export function createProcessMetrics(): { registry: Registry; render(): Promise<string> } {
  const registry = new Registry();
  collectProcessMetrics(registry);
  return { registry, render: () => registry.metrics() };
}

/**
 * prom-client's Node process metrics (CPU, memory, heap spaces, event-loop lag, GC, handles).
 * Three of them are gauges named `*_total`, which `promtool check metrics` rejects; the same
 * figures remain, by type, in `nodejs_active_handles`/`nodejs_active_requests`/`nodejs_active_resources`.
 */
function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}

/** The worker's exporter: its own runs, observed as they finish in this process. */
export interface WorkerMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** Give to the executor's `outcomeListeners`: it records in this process's memory only. */
  readonly outcomeListener: OutcomeListener;
  /** Counts an unhandled promise rejection of `agent`'s code (undefined: outside any agent). */
  countUnhandledRejection(agent: string | undefined): void;
  render(): Promise<string>;
}

/** The `agent` label of a fault that happened outside any agent's code (not a valid agent name). */
export const NO_AGENT_LABEL = '(none)';

/**
 * `workerId`, when given, labels every series `worker="<id>"`: the id `werkpilot status` and the
 * dashboard list (host, i.e. the container ID under Docker, and PID), which Prometheus copies into
 * `instance` (deploy/prometheus.yml) so a graph names the worker rather than its container's IP.
 */
export function createWorkerMetrics({ activeRuns, workerId }: { activeRuns?: () => number; workerId?: string } = {}): WorkerMetrics {
  const registry = new Registry();
  if (workerId) registry.setDefaultLabels({ worker: workerId });
  collectProcessMetrics(registry);
  const runs = new Counter({
    name: 'werkpilot_worker_runs_total',
    help: 'Agent runs this worker process finished, by outcome (the cluster-wide total is werkpilot_agent_runs_total on the scheduler)',
    labelNames: ['agent', 'outcome'] as const,
    registers: [registry],
  });
  const retries = new Counter({
    name: 'werkpilot_worker_retries_total',
    help: 'Attempts after the first that this worker process ran',
    labelNames: ['agent'] as const,
    registers: [registry],
  });
  const durations = new Histogram({
    name: 'werkpilot_worker_run_duration_seconds',
    help: 'Duration of agent attempts this worker process ran',
    labelNames: ['agent'] as const,
    buckets: [...RUN_DURATION_BUCKETS_SECONDS],
    registers: [registry],
  });
  if (activeRuns) {
    new Gauge({
      name: 'werkpilot_worker_active_runs',
      help: 'Agent runs executing in this worker process now',
      registers: [registry],
      collect() {
        this.set(activeRuns());
      },
    });
  }
  const unhandledRejections = new Counter({
    name: 'werkpilot_unhandled_rejections_total',
    help: `Promise rejections nobody awaited in this worker process, by the agent whose code left them (${NO_AGENT_LABEL}: outside any agent); the worker logs and survives each`,
    labelNames: ['agent'] as const,
    registers: [registry],
  });
  const outcomeListener: OutcomeListener = (record) => {
    runs.inc({ agent: record.agent, outcome: exportedOutcomeOf(record) });
    const isExecuted = record.outcome === 'success' || record.outcome === 'failure';
    if ((record.attempt ?? 1) > 1 && isExecuted) retries.inc({ agent: record.agent });
    if (record.durationMs !== undefined && isExecuted) durations.observe({ agent: record.agent }, record.durationMs / 1000);
  };
  return {
    registry,
    contentType: registry.contentType,
    outcomeListener,
    countUnhandledRejection: (agent) => unhandledRejections.inc({ agent: agent ?? NO_AGENT_LABEL }),
    render: () => registry.metrics(),
  };
}
