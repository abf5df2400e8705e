import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type Response } from 'express';

// The page's files stay in src/ (they need no build); this module sits at the same depth in src/
// and dist/, so one path serves both.
const PUBLIC_DIR = fileURLToPath(new URL('../../src/http/public', import.meta.url));

/**
 * The pages: the overview at `/`, and the run-history pages — `/agents/<name>` (charts, recent
 * runs, definition, health), `/runs` (search), `/runs/<id>` (one run, its pipeline's graph) and
 * `/dlq` (dead-lettered runs by cause). Small static pages (vanilla JS and CSS, no build step) that
 * read the operator API; the address carries only what the page's script reads back from it, so
 * an unknown agent or run is the API's 404, shown on the page.
 */
export function dashboardRoutes(): Router {
  const router = Router();
  const page = (file: string) => (_req: unknown, res: Response) => res.sendFile(path.join(PUBLIC_DIR, file), { maxAge: 0 });
  router.get('/agents/:name', page('agent.html'));
  router.get('/runs', page('runs.html'));
  router.get('/runs/:id', page('run.html'));
  router.get('/dlq', page('dlq.html'));
  router.use(express.static(PUBLIC_DIR, { index: 'index.html', maxAge: 0, fallthrough: true }));
  return router;
}
