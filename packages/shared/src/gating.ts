import type { Job } from 'bullmq';
import type { AgentSpec } from './agent.js';
import type { RunJobData } from './queues.js';

/**
 * Dependency health gating: before a run starts, the worker evaluates one list of rules; any
 * reason returned skips the run (outcome `skipped`, not a failure). Each capability contributes its
 * rules in one place (the worker's wiring), e.g. agent-toggle (disabled), boot (blocked), the DLQ
 * rule below, and the circuit breaker / health monitor (`dependency X unhealthy: circuit open`).
 */

/** What a rule sees: the agent about to run and its job. */
export interface GateContext {
  spec: AgentSpec;
  job: Job<RunJobData>;
}

/**
 * One gating rule. Returns the reason(s) to skip the run, or null / [] to let it run.
 * Reasons are read by people: `disabled`, `dependency crm-sync disabled`.
 */
export type GateRule = (ctx: GateContext) => Promise<string | string[] | null>;

/**
 * Checks one dependency of the run's agent; returns what is wrong with it (`disabled`,
 * `unhealthy: circuit open`, `failed boot: timeout`) or null. `dependencyRule` prefixes
 * `dependency <name> `.
 */
export type DependencyCheck = (dependency: string, ctx: GateContext) => Promise<string | null>;

/** Checks several dependencies at once (one Redis round trip for all); one entry per dependency, null when fine. */
export type DependencyBatchCheck = (dependencies: readonly string[], ctx: GateContext) => Promise<(string | null)[]>;

/** The gate the executor calls: every rule's reasons, in rule order; empty means run. */
export type RunGate = (spec: AgentSpec, job: Job<RunJobData>) => Promise<string[]>;

const DEPENDENCY_REASON = /^dependency \S+ /;

/** Whether a skip reason is about a dependency (such reasons also publish `dependency:unhealthy`). */
export function isDependencyReason(reason: string): boolean {
  return DEPENDENCY_REASON.test(reason);
}

/** Formats a dependency problem the way every rule reports it: `dependency crm-sync disabled`. */
export function dependencyReason(dependency: string, problem: string): string {
  return `dependency ${dependency} ${problem}`;
}

/** A rule applying `check` to each of the agent's direct dependencies. */
export function dependencyRule(check: DependencyCheck): GateRule {
  return async (ctx) => {
    const problems = await Promise.all(ctx.spec.dependsOn.map((dep) => check(dep, ctx)));
    return reasonsFor(ctx.spec.dependsOn, problems);
  };
}

/** A rule checking all dependencies in one call (to batch Redis reads). */
export function dependencyBatchRule(check: DependencyBatchCheck): GateRule {
  return async (ctx) => {
    if (ctx.spec.dependsOn.length === 0) return null;
    return reasonsFor(ctx.spec.dependsOn, await check(ctx.spec.dependsOn, ctx));
  };
}

function reasonsFor(dependencies: readonly string[], problems: (string | null)[]): string[] {
  const reasons: string[] = [];
  dependencies.forEach((dep, i) => {
    const problem = problems[i];
    if (problem) reasons.push(dependencyReason(dep, problem));
  });
  return reasons;
}

export interface RunGateOptions {
  rules: readonly GateRule[];
}

/**
 * Builds the gate from a list of rules. Rules run concurrently (each is typically one Redis read);
 * the reasons come back in rule order, duplicates removed. A rule that throws fails the attempt
 * (BullMQ retries it): a gate that cannot be evaluated must not silently let a run through.
 */
export function createRunGate({ rules }: RunGateOptions): RunGate {
  const list = [...rules];
  return async (spec, job) => {
    const ctx: GateContext = { spec, job };
    const results = await Promise.all(list.map((rule) => rule(ctx)));
    const reasons = new Set<string>();
    for (const result of results) {
      if (result === null) continue;
      for (const reason of Array.isArray(result) ? result : [result]) if (reason) reasons.add(reason);
    }
    return [...reasons];
  };
}
