import { fileURLToPath } from 'node:url';
import express, { Router } from 'express';

// The page's files stay in src/ (they need no build); this module sits at the same depth in src/
// and dist/, so one path serves both.
const PUBLIC_DIR = fileURLToPath(new URL('../../src/http/public', import.meta.url));

/**
 * The overview page at `/`: a small static page (vanilla JS and CSS, no build step) that reads the
 * operator API and updates live.
 */
export function dashboardRoutes(): Router {
  const router = Router();
  router.use(express.static(PUBLIC_DIR, { index: 'index.html', maxAge: 0, fallthrough: true }));
  return router;
}
