import type { Express } from 'express';
import { EventBus, LeaderElection, createSnapshotService, type Keys, type Queues, type Redis, type Registry, type SnapshotService } from '@werkpilot/shared';
import { createHttpApp } from '../../apps/scheduler/src/http/app.js';
import { RETENTION, silentLogger } from './orchestrator.js';

/**
 * The scheduler's HTTP app with the snapshot service `apps/scheduler` wires (workers, circuit,
 * health, score, leader, boot, enabled flag), so `/metrics` and `/api/metrics` do the work they do
 * in production. The leader election is built but not started: this replica reports itself a
 * follower, which changes no figure's cost.
 */
export function schedulerHttpApp({
  redis,
  keys,
  queues,
  registry,
  agentHistograms = true,
  maxAgeMs = 2000,
}: {
  redis: Redis;
  keys: Keys;
  queues: Queues;
  registry: Registry;
  agentHistograms?: boolean;
  maxAgeMs?: number;
}): { app: Express; snapshots: SnapshotService; close(): Promise<void> } {
  const log = silentLogger('scheduler');
  const bus = new EventBus({ redis, keys, log });
  const leader = new LeaderElection({ redis, keys, log, id: 'bench-scheduler' });
  const snapshots = createSnapshotService({ redis, keys, registry, queues, leader, agentHistograms, maxAgeMs, log });
  const app = createHttpApp({
    queues,
    registry,
    snapshots,
    log,
    isReady: async () => (await redis.ping()) === 'PONG',
    redis,
    keys,
    bus,
    retention: RETENTION,
    credentials: {},
  });
  return {
    app,
    snapshots,
    close: async () => {
      await snapshots.close();
      await bus.close();
    },
  };
}
