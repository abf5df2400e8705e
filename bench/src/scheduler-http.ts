import type { Express } from 'express';
import {
  AgentStateStore,
  CircuitBreaker,
  EventBus,
  HealthStore,
  LeaderElection,
  clusterScrapeSources,
  type Keys,
  type Queues,
  type Redis,
  type Registry,
  clusterSnapshotExtensions,
} from '@werkpilot/shared';
import { createHttpApp } from '../../apps/scheduler/src/http/app.js';
import { RETENTION, silentLogger } from './orchestrator.js';

/**
 * The scheduler's HTTP app with the snapshot extensions and Prometheus scrape sources that
 * `apps/scheduler/src/main.ts` wires (workers, circuit, health, score, leader, boot, enabled flag),
 * so `/metrics` and `/api/metrics` do the work they do in production. The leader election is built
 * but not started: this replica reports itself a follower, which changes no figure's cost.
 */
export function schedulerHttpApp({ redis, keys, queues, registry }: { redis: Redis; keys: Keys; queues: Queues; registry: Registry }): {
  app: Express;
  close(): Promise<void>;
} {
  const log = silentLogger('scheduler');
  const bus = new EventBus({ redis, keys, log });
  const state = new AgentStateStore({ redis, keys });
  const circuit = new CircuitBreaker({ redis, keys, log });
  const health = new HealthStore({ redis, keys });
  const leader = new LeaderElection({ redis, keys, log, id: 'bench-scheduler' });
  const app = createHttpApp({
    snapshot: {
      queues,
      registry,
      state,
      extend: clusterSnapshotExtensions({ redis, keys, registry, circuit, health, leader }),
    },
    scrapeSources: clusterScrapeSources({ keys, registry, replicaId: leader.id }),
    log,
    isReady: async () => (await redis.ping()) === 'PONG',
    redis,
    keys,
    bus,
    retention: RETENTION,
    credentials: {},
  });
  return { app, close: () => bus.close() };
}
