import type { Job } from 'bullmq';
import type { AgentSpec } from '../agents/agent.js';
import type { AgentBootState } from '../self-healing/boot.js';
import type { CircuitState } from '../self-healing/circuit-breaker.js';
import type { AgentHealth } from '../self-healing/health-rating.js';
import type { RunJobData } from '../queues/queues.js';
import { dependencySkipReason, type SkipReason, uniqueSkipReasons } from './skip-reasons.js';

/**
 * Dependency health gating: before a run starts, the worker evaluates one list of rules; any
 * reason returned skips the run (outcome `skipped`, not a failure). Each capability contributes its
 * rules in one place (the worker's wiring): agent-toggle (disabled), boot (blocked), the circuit
 * breaker / health monitor (`dependency X unhealthy: circuit open`). The agent's own circuit and the
 * dependency runs of its tick or pipeline are decided by run admission's script (run-admission.ts).
 *
 * Rules are pure functions of a GateView: the gate state of the agent and its dependencies, which
 * each worker caches and run admission proves current on every run (gate-cache.ts) — so evaluating
 * the gate costs no Redis call of its own.
 */

/** The gate state of one agent: what the rules may look at. */
export interface AgentGateState {
  isDisabled: boolean;
  /** Its schedule is paused (schedule-pause.ts): scheduled runs are skipped, manual ones run. */
  isSchedulePaused: boolean;
  /** Its verdict at the last boot, if any. */
  boot: AgentBootState | undefined;
  /** The health monitor's last rating. */
  health: AgentHealth;
  circuit: CircuitState;
}

/** The gate state of the agents a rule may ask about: the run's agent and its dependencies. */
export interface GateView {
  of(agent: string): AgentGateState;
}

/** What a rule sees: the agent about to run, its job, and the gate state. */
export interface GateContext {
  spec: AgentSpec;
  job: Job<RunJobData>;
  view: GateView;
}

/**
 * One gating rule. Returns the reason(s) to skip the run, or null / [] to let it run.
 * Reasons are read by people: `disabled`, `dependency crm-sync disabled` (skip-reasons.ts).
 */
export type GateRule = (ctx: GateContext) => SkipReason | SkipReason[] | null;

/**
 * Checks one dependency of the run's agent; returns what is wrong with it (`disabled`,
 * `unhealthy: circuit open`, `failed boot: timeout`) or null. `dependencyRule` prefixes
 * `dependency <name> `.
 */
export type DependencyCheck = (dependency: string, ctx: GateContext) => string | null;

/** The gate run admission calls: every rule's reasons, in rule order; empty means run. */
export type RunGate = (ctx: GateContext) => SkipReason[];

/** A rule applying `check` to each of the agent's direct dependencies. */
export function dependencyRule(check: DependencyCheck): GateRule {
  return (ctx) => {
    const reasons: SkipReason[] = [];
    for (const dep of ctx.spec.dependsOn) {
      const problem = check(dep, ctx);
      if (problem) reasons.push(dependencySkipReason(dep, problem));
    }
    return reasons;
  };
}

export interface RunGateOptions {
  rules: readonly GateRule[];
}

/** Builds the gate from a list of rules: the reasons come back in rule order, duplicates removed. */
export function createRunGate({ rules }: RunGateOptions): RunGate {
  const list = [...rules];
  return (ctx) => {
    const reasons: SkipReason[] = [];
    for (const rule of list) {
      const result = rule(ctx);
      if (result === null) continue;
      if (Array.isArray(result)) reasons.push(...result);
      else reasons.push(result);
    }
    return reasons.length > 0 ? uniqueSkipReasons(reasons) : NO_REASONS;
  };
}

const NO_REASONS: SkipReason[] = [];
