import express, { type ErrorRequestHandler, type Express } from 'express';
import { buildMetricsSnapshot, type Logger, type SnapshotDeps } from '@werkpilot/shared';

export interface HttpDeps {
  snapshot: SnapshotDeps;
  log: Logger;
  /** Whether the process is ready to serve (Redis reachable, registry loaded). */
  isReady: () => Promise<boolean>;
}

/**
 * The scheduler's HTTP surface on PORT (3001). Handlers answer bad input with
 * 400 `{ "error": "..." }` and never leak a stack trace.
 */
export function createHttpApp(deps: HttpDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '2mb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const ready = await deps.isReady().catch(() => false);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready' });
  });

  const sendSnapshot: express.RequestHandler = async (_req, res) => {
    res.json(await buildMetricsSnapshot(deps.snapshot));
  };
  app.get('/api/metrics', sendSnapshot);
  app.get('/metrics', sendSnapshot);

  app.use((_req, res) => {
    res.status(404).json({ error: 'not found' });
  });
  app.use(errorHandler(deps.log));
  return app;
}

function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    const status = typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) log.error({ err }, 'request failed');
    res.status(status).json({ error: status === 500 ? 'internal error; see the scheduler log' : String(err.message ?? 'bad request') });
  };
}
