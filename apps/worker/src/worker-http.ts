import express, { type Express } from 'express';
import type { Server } from 'node:http';
import { bindPort, readProcessMemory, type Availability, type WorkerMetrics } from '@werkpilot/shared';

export interface WorkerHttpOptions {
  workerId: string;
  /** This worker's metrics once its runtime exists; until then `/metrics` answers 503. */
  metrics: () => WorkerMetrics | undefined;
  /** Whether this worker takes runs now, and why not (Redis, startup, shutdown). */
  readiness: () => Availability | Promise<Availability>;
  /** Whether the process is shutting down (liveness turns 503). */
  isStopping: () => boolean;
}

/**
 * The worker's own HTTP on WORKER_HTTP_PORT: `GET /metrics` (Prometheus text: this process's run
 * counters, duration histogram, active runs, unhandled rejections and Node process metrics),
 * `GET /healthz` (liveness: 200 while the process runs, Redis or not — restarting a worker does
 * not bring Redis back) and `GET /readyz` (200 once it takes runs; 503 with the reason while it
 * starts, waits for Redis or shuts down). Unauthenticated, like the scheduler's /metrics and
 * /healthz: keep the port inside the cluster.
 */
export function createWorkerHttpApp({ workerId, metrics, readiness, isStopping }: WorkerHttpOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    const stopping = isStopping();
    res.status(stopping ? 503 : 200).json({ status: stopping ? 'stopping' : 'ok', workerId, memory: readProcessMemory() });
  });
  app.get('/readyz', async (_req, res) => {
    const verdict = await readiness();
    if (verdict.available) res.json({ status: 'ready', workerId });
    else res.status(503).json({ status: 'not ready', workerId, reason: verdict.reason });
  });
  app.get('/metrics', async (_req, res, next) => {
    const current = metrics();
    if (!current) {
      res.status(503).json({ error: 'starting' });
      return;
    }
    try {
      res.type(current.contentType).send(await current.render());
    } catch (err) {
      next(err);
    }
  });
  app.use((req, res) => {
    res.status(404).json({ error: `not found: ${req.method} ${req.path}; this worker serves /metrics, /healthz and /readyz` });
  });
  return app;
}

/** Binds `port` (WORKER_HTTP_PORT) and serves the worker's HTTP on it. */
export async function startWorkerHttp(port: number, options: WorkerHttpOptions): Promise<Server> {
  const bound = await bindPort({ port, variable: 'WORKER_HTTP_PORT' });
  bound.serve(createWorkerHttpApp(options));
  return bound.server;
}
