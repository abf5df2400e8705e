import { Router } from 'express';

/** The nightly reports (kept 30 days), from the self-healing part's report store. */
export interface ReportsSource {
  /** The newest report, or null before the first nightly run. */
  latest(): Promise<unknown>;
  /** Every kept report, newest first. */
  list(): Promise<unknown[]>;
}

/** `GET /api/reports/latest` (404 before the first nightly run) and `GET /api/reports`. */
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
  return router;
}
