import express from 'express';
import type { Server } from 'node:http';
import { readProcessMemory, type WorkerMetrics } from '@werkpilot/shared';

export interface WorkerHttpOptions {
  port: number;
  workerId: string;
  metrics: WorkerMetrics;
  /** Whether the BullMQ worker is still taking runs. */
  isRunning: () => boolean;
}

/**
 * The worker's own HTTP on WORKER_HTTP_PORT: `GET /metrics` (Prometheus text: this process's run
 * counters, duration histogram, active runs and Node process metrics) and `GET /healthz`.
 * Unauthenticated, like the scheduler's /metrics and /healthz: keep the port inside the cluster.
 */
export function startWorkerHttp({ port, workerId, metrics, isRunning }: WorkerHttpOptions): Promise<Server> {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    const running = isRunning();
    res.status(running ? 200 : 503).json({ status: running ? 'ok' : 'stopped', workerId, memory: readProcessMemory() });
  });
  app.get('/metrics', async (_req, res, next) => {
    try {
      res.type(metrics.contentType).send(await metrics.render());
    } catch (err) {
      next(err);
    }
  });
  app.use((req, res) => {
    res.status(404).json({ error: `not found: ${req.method} ${req.path}; this worker serves /metrics and /healthz` });
  });
  return new Promise((resolve, reject) => {
    const server = app.listen(port, () => resolve(server)).once('error', reject);
  });
}
