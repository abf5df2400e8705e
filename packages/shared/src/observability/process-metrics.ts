import { Registry, collectDefaultMetrics } from 'prom-client';

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
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}
