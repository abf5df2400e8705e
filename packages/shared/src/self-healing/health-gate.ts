import { dependencyRule, type GateRule } from '../run/gating.js';
import { isDegradedReason } from './health-rating.js';

/**
 * Gate rule: a dependency whose circuit is open (or half-open), or which the monitor rated
 * unhealthy, skips the run: `dependency crm-sync unhealthy: circuit open`. The circuit is taken from
 * its own state (an operator's reset takes effect at once); the stored rating's circuit and
 * `disabled` reasons are therefore ignored (the toggle rule reads `disabled` itself), so a stale
 * rating cannot keep skipping after a reset, and degraded-only reasons never skip.
 */
export function dependencyHealthRule(): GateRule {
  return dependencyRule((dep, { view }) => {
    const { circuit, health } = view.of(dep);
    if (circuit === 'open') return 'unhealthy: circuit open';
    if (circuit === 'half-open') return 'unhealthy: circuit half-open';
    if (health.state !== 'unhealthy') return null;
    const reasons = health.reasons.filter((r) => !isCoveredLive(r) && !isDegradedReason(r));
    return reasons.length > 0 ? `unhealthy: ${reasons.join(', ')}` : null;
  });
}

/**
 * Reasons a stored rating must not skip a dependent for: the circuit and `disabled` are read live
 * (here and in agent-toggle.ts), and `no live worker` is false by definition on the worker asking.
 */
function isCoveredLive(reason: string): boolean {
  return reason.startsWith('circuit ') || reason === 'disabled' || reason === 'no live worker';
}
