import { Router } from 'express';
import { wantsPrometheusFormat, type MetricsSnapshot, type SchedulerMetrics } from '@werkpilot/shared';

export interface MetricsRoutesDeps {
  snapshot: () => Promise<MetricsSnapshot>;
  prometheus: SchedulerMetrics;
}

/**
 * `/metrics` is content-negotiated so old and new clients both work: Prometheus text when `Accept`
 * names text/plain or application/openmetrics-text (Prometheus always does) or with
 * `?format=prometheus`; otherwise the predecessor's JSON snapshot, so
 * `curl :3001/metrics | jq '.deadLetterQueue'` keeps working. `/api/metrics` is always JSON.
 */
export function metricsRoutes({ snapshot, prometheus }: MetricsRoutesDeps): Router {
  const router = Router();
  router.get('/metrics', async (req, res) => {
    res.vary('Accept');
    if (wantsPrometheusFormat(req.headers.accept, req.query.format)) {
      res.type(prometheus.contentType).send(await prometheus.render());
      return;
    }
    res.json(await snapshot());
  });
  router.get('/api/metrics', async (_req, res) => {
    res.json(await snapshot());
  });
  return router;
}
