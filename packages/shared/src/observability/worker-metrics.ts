import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { OutcomeListener } from '../run/agent-executor.js';
import { RUN_DURATION_BUCKETS_SECONDS } from '../self-healing/agent-state.js';
import { exportedOutcomeOf } from './prometheus-metrics.js';
import { collectProcessMetrics } from './process-metrics.js';

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
