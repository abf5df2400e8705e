import express, { type Express, type RequestHandler } from 'express';
import {
  createShards,
  readAgentRollups,
  triggerRun,
  type EventBus,
  type Keys,
  type Logger,
  type MetricsSnapshot,
  type Queues,
  type Redis,
  type RedisAvailability,
  type Registry,
  type Retention,
  type SnapshotService,
  type Shards,
} from '@werkpilot/shared';
import { agentsRoutes, type AgentsRoutesDeps, type TriggerAgent } from './agents-routes.js';
import { createDashboardAuth, type DashboardCredentials } from './auth.js';
import { BULL_BOARD_PATH, bullBoardRouter } from './bull-board.js';
import { dashboardRoutes } from './dashboard.js';
import { dlqRoutes } from './dlq-routes.js';
import { errorHandler, notFound } from './error-handler.js';
import { eventsRoutes } from './events-routes.js';
import type { LiveStreamLimits } from './live-event-streams.js';
import { metricsRoutes } from './metrics-routes.js';
import { refuseCrossSite, requireJson } from './mutation-guard.js';
import { pipelinesRoutes } from './pipelines-routes.js';
import { redisGuard } from './redis-guard.js';
import { reportsRoutes, type ReportsSource } from './reports-routes.js';
import { runsRoutes, type RunsRoutesDeps } from './runs-routes.js';
import { securityHeaders } from './security-headers.js';
import { shardsRoutes } from './shards-routes.js';

export interface HttpDeps {
  queues: Queues;
  registry: Registry;
  /** The cluster snapshot behind /metrics, /api/metrics and the agent views (snapshot-service.ts). */
  snapshots: SnapshotService;
  log: Logger;
  /** Whether the process is ready to serve (Redis reachable, registry loaded). */
  isReady: () => Promise<boolean>;
  /**
   * Redis's availability: `/readyz` answers from it (503 with the reason within a second), and the
   * API, `/metrics` and Bull Board's API answer 503 `{ "error": "redis unavailable" }` while Redis
   * does not answer (redis-guard.ts). Without it, `isReady` alone decides `/readyz`.
   */
  redisAvailability?: RedisAvailability;
  redis: Redis;
  keys: Keys;
  bus: EventBus;
  retention: Retention;
  /** DASHBOARD_TOKEN / DASHBOARD_USER / DASHBOARD_PASSWORD; none means read-only. */
  credentials: DashboardCredentials;
  /** Replaces the plain manual trigger, e.g. to support `withDependents` pipelines. */
  trigger?: TriggerAgent;
  toggle?: AgentsRoutesDeps['toggle'];
  resetCircuit?: AgentsRoutesDeps['resetCircuit'];
  boot?: AgentsRoutesDeps['boot'];
  schedules?: AgentsRoutesDeps['schedules'];
  backfill?: AgentsRoutesDeps['backfill'];
  cancel?: RunsRoutesDeps['cancel'];
  reports?: ReportsSource;
  /** Bounds of the live event streams; `maxClients` is SSE_MAX_CLIENTS. */
  liveStreams?: Partial<LiveStreamLimits>;
  /** The fleet's shards (WERKPILOT_SHARDS) and the one this scheduler serves; one shard when not given. */
  shards?: { fleet: Shards; served: number };
}

/**
 * The scheduler's HTTP surface on PORT (3001): the overview page, Bull Board, `/metrics`, the
 * operator API, `/healthz` and `/readyz`. Every route but the last three sits behind the dashboard
 * credentials (read-only without them). Every answer carries the security headers; operator actions
 * must come from this server's pages or a non-browser client, with a JSON body or none
 * (mutation-guard.ts). Handlers answer bad input with 400 `{ "error": "..." }` and unknown agents
 * or runs with 404; no stack trace ever leaves the process.
 */
export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(securityHeaders());
  const auth = createDashboardAuth(deps.credentials);
  if (!auth.canMutate) {
    deps.log.warn(
      'no dashboard credentials configured: the dashboard, API and Bull Board are open to read and operator actions are disabled; ' +
        'set DASHBOARD_TOKEN or DASHBOARD_USER/DASHBOARD_PASSWORD to protect them and enable actions',
    );
  }
  const { queues, registry } = deps;
  const snapshot = async (): Promise<MetricsSnapshot> => (await deps.snapshots.current()).view;
  const trigger: TriggerAgent =
    deps.trigger ?? ((agent, options) => triggerRun({ queue: queues.agents, registry, retention: deps.retention, redis: deps.redis, keys: deps.keys }, agent, options));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const redis = await deps.redisAvailability?.check();
    if (redis && !redis.available) {
      res.status(503).json({ status: 'not ready', reason: redis.reason });
      return;
    }
    const ready = await deps.isReady().catch(() => false);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready' });
  });
  app.use(refuseCrossSite());
  app.use(auth.middleware);
  app.use(requireJson());
  if (deps.redisAvailability) app.use(['/api', '/metrics', `${BULL_BOARD_PATH}/api`], redisGuard(deps.redisAvailability));
  app.use(seeOwnChanges(deps.snapshots));

  app.use(metricsRoutes({ snapshots: deps.snapshots, canSeeEverything: (req) => !auth.canMutate || auth.isAuthorised(req.headers.authorization) }));
  app.get('/api/session', (_req, res) => {
    res.json({ authMode: auth.mode, canMutate: auth.canMutate });
  });
  app.use(
    agentsRoutes({
      registry,
      queues,
      snapshot,
      trigger,
      ...(deps.toggle ? { toggle: deps.toggle } : {}),
      ...(deps.resetCircuit ? { resetCircuit: deps.resetCircuit } : {}),
      ...(deps.boot ? { boot: deps.boot } : {}),
      ...(deps.schedules ? { schedules: deps.schedules } : {}),
      ...(deps.backfill ? { backfill: deps.backfill } : {}),
      rollups: (agent) => readAgentRollups(deps.redis, deps.keys, agent, Date.now()),
      ...(deps.shards ? { shards: deps.shards.fleet } : {}),
    }),
  );
  app.use(shardsRoutes(deps.shards ?? { fleet: createShards(registry, deps.keys.prefix, 1), served: 0 }));
  app.use(dlqRoutes({ queues }));
  app.use(runsRoutes({ queues, ...(deps.cancel ? { cancel: deps.cancel } : {}) }));
  app.use(pipelinesRoutes({ queues, redis: deps.redis, keys: deps.keys, registry }));
  app.use(eventsRoutes({ bus: deps.bus, log: deps.log, limits: deps.liveStreams ?? {} }));
  if (deps.reports) app.use(reportsRoutes(deps.reports));
  app.use(BULL_BOARD_PATH, bullBoardRouter({ queues, readOnly: !auth.canMutate }));
  app.use(dashboardRoutes());

  app.use(notFound);
  app.use(errorHandler(deps.log));
  return app;
}

const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Read-your-writes for operators: when a mutating request succeeds, the snapshot is marked
 * outdated before the answer leaves, so the dashboard's next read (or the CLI's) shows the change
 * instead of a snapshot up to METRICS_SNAPSHOT_MAX_AGE_MS old. Hooked on `res.json`, which every
 * API answer goes through, because the mutation is done by then.
 */
function seeOwnChanges(snapshots: Pick<SnapshotService, 'invalidate'>): RequestHandler {
  return (req, res, next) => {
    if (MUTATING_METHODS.has(req.method)) {
      const json = res.json.bind(res);
      res.json = (body) => {
        if (res.statusCode < 400) snapshots.invalidate();
        return json(body);
      };
    }
    next();
  };
}
