import { OUTCOME_WINDOW, recentOutcomes } from './agent-state.js';
import { disabledSet } from './agent-toggle.js';
import { RESTART_WINDOW_MS, circuitKey, restartsKey, type CircuitState } from './circuit-breaker.js';
import { healthKey, type HealthState } from './health.js';
import { liveWorkersKey } from './heartbeat.js';
import type { Keys } from './keys.js';
import { leaderKey } from './leader.js';
import { percentileOfSorted } from './percentiles.js';
import type { ScrapeSource } from './prometheus-metrics.js';
import type { Registry } from './registry.js';
import { computeScore } from './score.js';

const CIRCUIT_STATES: CircuitState[] = ['closed', 'half-open', 'open'];
const HEALTH_STATES: (HealthState | 'unknown')[] = ['healthy', 'degraded', 'unhealthy', 'unknown'];

export interface ClusterScrapeOptions {
  keys: Keys;
  registry: Registry;
  /** This scheduler replica's lease id: the leader gauge is 1 when the lease key holds it. */
  replicaId?: string;
  clock?: () => number;
}

/**
 * The scrape's reads of the self-healing and lifecycle state — circuit, health, score, enabled
 * flag, live workers, leader — queued on the exporter's single pipeline. They read the same keys
 * as circuit-breaker.ts, health.ts, score.ts, agent-toggle.ts, heartbeat.ts and leader.ts (through
 * their key builders) and compute the score with the same function, so `/metrics` and the JSON
 * snapshot agree.
 */
export function clusterScrapeSources({ keys, registry, replicaId, clock = Date.now }: ClusterScrapeOptions): ScrapeSource[] {
  const circuitAndScore: ScrapeSource = (read, gauges) => {
    const now = clock();
    for (const spec of registry.list()) {
      const agent = spec.name;
      let state: string | null = null;
      let restarts = 0;
      let recent: string | null = null;
      let outcomes: string[] = [];
      let durations: number[] = [];
      read((p) => p.hget(circuitKey(keys, agent), 'state'), (r) => (state = r as string | null));
      read((p) => p.zcount(restartsKey(keys, agent), `(${now - RESTART_WINDOW_MS}`, '+inf'), (r) => (restarts = Number(r)));
      read((p) => p.hget(keys.agentStats(agent), 'recent'), (r) => (recent = r as string | null));
      read((p) => p.lrange(keys.agentOutcomes(agent), 0, OUTCOME_WINDOW - 1), (r) => (outcomes = recentOutcomes(recent, r as string[])));
      read(
        (p) => p.lrange(keys.agentDurations(agent), 0, OUTCOME_WINDOW - 1),
        (r) => {
          durations = (r as string[]).map(Number).sort((a, b) => a - b);
          // The last read of this agent: every figure it needs has arrived.
          const current = (state as CircuitState | null) ?? 'closed';
          for (const s of CIRCUIT_STATES) gauges.circuitState.set({ agent, state: s }, s === current ? 1 : 0);
          const score = computeScore({
            runs: outcomes.length,
            successRate: outcomes.length === 0 ? 0 : outcomes.filter((o) => o === 's').length / outcomes.length,
            p95: percentileOfSorted(durations, 95),
            timeoutMs: spec.timeoutMs,
            restartsLastHour: restarts,
            maxRestartsPerHour: spec.maxRestartsPerHour,
          });
          if (score !== null) gauges.score.set({ agent }, score);
        },
      );
    }
  };

  const health: ScrapeSource = (read, gauges, agents) => {
    for (const agent of agents) {
      read(
        (p) => p.hget(healthKey(keys, agent), 'state'),
        (r) => {
          const current = (r as string | null) ?? 'unknown';
          for (const s of HEALTH_STATES) gauges.healthState.set({ agent, state: s }, s === current ? 1 : 0);
        },
      );
    }
  };

  const enabled: ScrapeSource = (read, gauges, agents) => {
    if (agents.length === 0) return;
    read(
      (p) => p.smismember(disabledSet(keys), ...agents),
      (r) => (r as number[]).forEach((isDisabled, i) => gauges.enabled.set({ agent: agents[i]! }, isDisabled === 1 ? 0 : 1)),
    );
  };

  const workersAndLeader: ScrapeSource = (read, gauges) => {
    // The live index is scored by heartbeat expiry; expired members are not counted (heartbeat.ts prunes them).
    read((p) => p.zcount(liveWorkersKey(keys), clock(), '+inf'), (r) => gauges.liveWorkers.set(Number(r)));
    if (replicaId !== undefined) read((p) => p.get(leaderKey(keys)), (r) => gauges.isLeader.set(r === replicaId ? 1 : 0));
  };

  return [circuitAndScore, health, enabled, workersAndLeader];
}
