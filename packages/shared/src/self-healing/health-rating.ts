import type { AgentSpec, HealthCheckResult } from '../agents/agent.js';
import type { AgentState } from './agent-state.js';
import type { CircuitStatus } from './circuit-breaker.js';
import { cronIntervalMs } from '../agents/cron.js';

/**
 * How the health monitor (health.ts) rates an agent `healthy`, `degraded` or `unhealthy`, with the
 * reasons: a pure function of what it gathered, so the rules can be tested without a cluster.
 */

export type HealthState = 'healthy' | 'degraded' | 'unhealthy';

export interface AgentHealth {
  /** null until the monitor has rated the agent once. */
  state: HealthState | null;
  reasons: string[];
  checkedAt: string | null;
}

/** Thresholds of the health monitor (docs/design.md#health-monitor). */
export const HEALTH_RULES = {
  consecutiveFailures: 3,
  staleScheduleIntervals: 3,
  minSuccessRate: 0.9,
  maxP95OfTimeout: 0.8,
} as const;

/** Everything one rating looks at, gathered by the monitor (or a test). */
export interface HealthInputs {
  spec: Pick<AgentSpec, 'name' | 'schedule' | 'timeoutMs'>;
  state: Pick<AgentState, 'consecutiveFailures' | 'lastSuccessAt' | 'recentSuccessRate' | 'recentRuns' | 'p95'>;
  circuit: Pick<CircuitStatus, 'state'>;
  isDisabled: boolean;
  hasLiveWorker: boolean;
  /** The agent's healthCheck outcome; undefined when it has none (or it was not run). */
  healthCheck?: HealthCheckResult;
  now: number;
}

/** Rates one agent by the rules of docs/design.md#health-monitor. Pure: the same inputs always give the same answer. */
export function evaluateHealth(input: HealthInputs): { state: HealthState; reasons: string[] } {
  const unhealthy: string[] = [];
  const degraded: string[] = [];
  const { spec, state } = input;

  if (input.isDisabled) unhealthy.push('disabled');
  if (input.circuit.state === 'open') unhealthy.push('circuit open');
  if (input.circuit.state === 'half-open') unhealthy.push('circuit half-open');
  if (state.consecutiveFailures >= HEALTH_RULES.consecutiveFailures) unhealthy.push(`${state.consecutiveFailures} consecutive failures`);
  if (input.healthCheck && !input.healthCheck.healthy) unhealthy.push(`healthCheck failed: ${input.healthCheck.reason ?? 'no reason given'}`);
  if (!input.hasLiveWorker) unhealthy.push('no live worker');
  if (spec.schedule && state.lastSuccessAt) {
    const limit = HEALTH_RULES.staleScheduleIntervals * cronIntervalMs(spec.schedule.cron, spec.schedule.tz, new Date(input.now));
    const age = input.now - Date.parse(state.lastSuccessAt);
    if (age > limit) unhealthy.push(`last success ${formatMs(age)} ago, over ${HEALTH_RULES.staleScheduleIntervals} schedule intervals (${formatMs(limit)})`);
  }

  if (state.recentSuccessRate !== null && state.recentSuccessRate < HEALTH_RULES.minSuccessRate) {
    degraded.push(`success rate ${Math.round(state.recentSuccessRate * 100)}% over the last ${state.recentRuns} runs (under ${HEALTH_RULES.minSuccessRate * 100}%)`);
  }
  if (state.p95 !== null && state.p95 > HEALTH_RULES.maxP95OfTimeout * spec.timeoutMs) {
    degraded.push(`p95 ${state.p95} ms is over ${HEALTH_RULES.maxP95OfTimeout * 100}% of timeoutMs ${spec.timeoutMs} ms`);
  }

  if (unhealthy.length > 0) return { state: 'unhealthy', reasons: [...unhealthy, ...degraded] };
  if (degraded.length > 0) return { state: 'degraded', reasons: degraded };
  return { state: 'healthy', reasons: [] };
}

/** Whether a reason only degrades an agent (it never makes a dependency skip). */
export function isDegradedReason(reason: string): boolean {
  return reason.startsWith('success rate ') || reason.startsWith('p95 ');
}

function formatMs(ms: number): string {
  if (ms >= 3_600_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  if (ms >= 60_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 1000).toFixed(1)} s`;
}
