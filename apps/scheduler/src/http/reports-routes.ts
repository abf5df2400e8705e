import { Router } from 'express';

/** The nightly reports (kept 30 days), from the self-healing part's report store. */
export interface ReportsSource {
  /** The newest report, or null before the first nightly run. */
  latest(): Promise<unknown>;
  /** Every kept report, newest first. */
  list(): Promise<unknown[]>;
  /** Queues a nightly optimisation now (it replaces today's report); returns its system job id. */
  runNow?(): Promise<string>;
}

/** `GET /api/reports/latest` (404 before the first nightly run), `GET /api/reports` and `POST /api/reports/run`. */
export function reportsRoutes(reports: ReportsSource): Router {
  const router = Router();
  router.get('/api/reports/latest', async (_req, res) => {
    const report = await reports.latest();
    if (report === null || report === undefined) {
      res.status(404).json({ error: 'no nightly report yet: the first one is written at NIGHTLY_CRON (23:00 Europe/Zurich by default)' });
      return;
    }
    res.json(report);
  });
  router.get('/api/reports', async (_req, res) => {
    res.json({ reports: await reports.list() });
  });
  const runNow = reports.runNow;
  if (runNow) {
    // On demand (operators, the demo): the report appears at /api/reports/latest once a worker ran it.
    router.post('/api/reports/run', async (_req, res) => {
      res.status(202).json({ jobId: await runNow() });
    });
  }
  return router;
}
