import type { RunRecord } from '../self-healing/agent-state.js';

/**
 * Prometheus exposition, what its writers share: the outcome label of the run counters. The
 * writers: the worker's own, process-local figures (worker-metrics.ts), the process metrics of both
 * apps (process-metrics.ts) and the scheduler's cluster-wide figures (cluster-exposition.ts);
 * `/metrics` picks the format by metrics-negotiation.ts. Each process builds its own prom-client
 * Registry; nothing is registered on prom-client's global default registry, so two apps in one
 * process (tests) never collide.
 */

/** The outcome label of `werkpilot_agent_runs_total`; the values are mutually exclusive. */
export const EXPORTED_OUTCOMES = ['success', 'failure', 'skipped', 'timeout', 'cancelled'] as const;
export type ExportedOutcome = (typeof EXPORTED_OUTCOMES)[number];

/** How a run record counts in `werkpilot_agent_runs_total`. */
export function exportedOutcomeOf(record: RunRecord): ExportedOutcome {
  if (record.timedOut) return 'timeout';
  return record.outcome;
}
