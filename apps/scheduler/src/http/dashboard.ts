import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';

// The page's files stay in src/ (they need no build); this module sits at the same depth in src/
// and dist/, so one path serves both.
const PUBLIC_DIR = fileURLToPath(new URL('../../src/http/public', import.meta.url));
/** The run-history pages' bodies and their one layout: outside PUBLIC_DIR, so never served bare. */
const PAGES_DIR = fileURLToPath(new URL('../../src/http/pages', import.meta.url));

/**
 * The history pages: the route, the body in PAGES_DIR, the title after "Werkpilot · ", and the
 * page's own scripts (after common.js, which the layout loads with the confirm dialog and toast).
 */
const HISTORY_PAGES = [
  { route: '/agents/:name', body: 'agent.html', title: 'Agent', scripts: ['charts.js', 'agent.js'] },
  { route: '/runs', body: 'runs.html', title: 'Runs', scripts: ['runs.js'] },
  { route: '/runs/:id', body: 'run.html', title: 'Run', scripts: ['run.js'] },
  { route: '/dlq', body: 'dlq.html', title: 'DLQ by cause', scripts: ['dlq.js'] },
] as const;

/**
 * The pages: the overview at `/`, and the run-history pages — `/agents/<name>` (charts, recent
 * runs, definition, health), `/runs` (search), `/runs/<id>` (one run, its pipeline's graph) and
 * `/dlq` (dead-lettered runs by cause). Small static pages (vanilla JS and CSS, no build step) that
 * read the operator API; the address carries only what the page's script reads back from it, so
 * an unknown agent or run is the API's 404, shown on the page. The history pages share one layout
 * (head and navigation), put together once when the routes are made.
 */
export function dashboardRoutes(): Router {
  const router = Router();
  const layout = readFileSync(path.join(PAGES_DIR, 'layout.html'), 'utf8');
  for (const { route, body, title, scripts } of HISTORY_PAGES) {
    // Replacement functions, not strings: a `$&` or `$'` in a page would otherwise be expanded.
    const html = layout
      .replace('{{title}}', () => title)
      .replace('{{body}}', () => readFileSync(path.join(PAGES_DIR, body), 'utf8'))
      .replace('{{scripts}}', () => scripts.map((script) => `  <script src="/${script}"></script>\n`).join(''));
    router.get(route, (_req, res) => {
      res.set('Cache-Control', 'public, max-age=0').type('html').send(html);
    });
  }
  router.use(express.static(PUBLIC_DIR, { index: 'index.html', maxAge: 0, fallthrough: true }));
  return router;
}
