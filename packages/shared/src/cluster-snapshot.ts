import type { Redis } from 'ioredis';
import { agentToggleSnapshot } from './agent-toggle.js';
import { bootSnapshot } from './boot.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { circuitSnapshot } from './circuit-breaker.js';
import { healthSnapshot, type HealthStore } from './health.js';
import { liveWorkersSnapshot } from './heartbeat.js';
import type { Keys } from './keys.js';
import { leaderSnapshot, type LeaderElection } from './leader.js';
import type { SnapshotDeps } from './metrics-snapshot.js';
import type { Registry } from './registry.js';
import { scoreSnapshot } from './score.js';

/**
 * Every capability's contribution to the JSON snapshot (`/api/metrics`): live workers, circuit,
 * health, score, leader, boot state and the enabled flag — in one list, so the scheduler and the
 * benchmark serve the same snapshot.
 */
export function clusterSnapshotExtensions(deps: {
  redis: Redis;
  keys: Keys;
  registry: Registry;
  circuit: CircuitBreaker;
  health: HealthStore;
  leader: LeaderElection;
}): NonNullable<SnapshotDeps['extend']> {
  const { redis, keys, registry, circuit } = deps;
  return [
    liveWorkersSnapshot({ redis, keys }),
    circuitSnapshot(circuit),
    healthSnapshot(deps.health),
    scoreSnapshot({ redis, keys, circuit, specs: () => registry.list() }),
    leaderSnapshot(deps.leader),
    bootSnapshot({ redis, keys }),
    agentToggleSnapshot({ redis, keys }),
  ];
}
